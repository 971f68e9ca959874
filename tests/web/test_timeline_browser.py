"""The run timeline (web/_run_timeline.html, web/static/web/run-timeline.js) in Chromium, through a real
Daphne (and, for the live run, a real Celery worker): a retried step, a failed and a cancelled run,
bars appearing live as steps start, and the replay control stepping through the events.

Runs that must end a given way without a worker are driven through runs.services, the
executor's own writers, so their event log is the one the system writes. Screenshots of
each, at 1280 and 390 px wide, go to test-artifacts/timeline/ for a person to look at.
"""

from __future__ import annotations

import re

import pytest

from realtime.events import retention
from runs import services
from runs.models import Run
from tests.processes import ROOT, celery_worker, daphne_server, free_port, subprocess_env
from tests.web import test_browser
from tests.web.test_browser import CLIENT_TIMING, RECORDER, WAIT_MS, log_in

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]

ARTIFACTS = ROOT / "test-artifacts" / "timeline"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
CLOCK = re.compile(r"\b\d\d:\d\d:\d\d\.\d{3} UTC\b")  # 24-hour, to the millisecond, with the zone
PLAN = [{"tool": "echo", "args": {"text": "one"}}, {"tool": "echo", "args": {"text": "two"}}]
FIRST_WORKER, SECOND_WORKER = "celery@host-a", "celery@host-b"  # the lost executor, the one taking over


# The page tests' users, as fixtures of this module too.
alice, staff = test_browser.alice, test_browser.staff


@pytest.fixture
def server():
    with daphne_server(env=subprocess_env(DJANGO_ALLOW_ASYNC_UNSAFE=""), port=free_port()) as server:
        yield server


def timeline_page(browser, base_url: str, user, viewport=DESKTOP):
    context = browser.new_context(base_url=base_url, viewport=viewport, timezone_id="UTC")
    context.add_init_script(CLIENT_TIMING + RECORDER)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.sockets = sockets
    event_reads: list[str] = []
    page.on("request", lambda request: "/events/" in request.url and event_reads.append(request.url))
    page.event_reads = event_reads
    log_in(page, user)
    return page


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def rows(page) -> list[tuple[str, str]]:
    """(row key, status) of each row of the waterfall, top to bottom."""
    found = page.eval_on_selector_all(
        ".run-timeline .tl-row", "rows => rows.map(r => [r.dataset.row, r.dataset.status])"
    )
    return [tuple(row) for row in found]


def marks(page, row: str) -> list[str]:
    return page.eval_on_selector_all(
        f'.run-timeline [data-row="{row}"] [data-mark]', "marks => marks.map(m => m.dataset.mark)"
    )


def loaded(page, run: Run) -> None:
    """The timeline shows every event of the run (its seq is the run's)."""
    run.refresh_from_db()
    page.wait_for_selector(f'.run-timeline[data-seq="{run.seq}"]')


def retried_run(owner) -> Run:
    """A run whose step 0's executor was lost: taken over, executed again (attempt 2), then finished.

    The take-over's retry (services.step_retry) is logged as a step_retried event with the step's
    attempts and the worker that took it over, as the take-over writes it.
    """
    run = services.run_create(owner=owner, steps=PLAN, prompt="retried")
    services.run_start(run_id=run.id)
    services.step_start(run_id=run.id, index=0, worker=FIRST_WORKER)
    services.step_retry(run_id=run.id, index=0, worker=SECOND_WORKER)
    services.step_succeed(run_id=run.id, index=0, output={"text": "one"})
    services.step_start(run_id=run.id, index=1, worker=SECOND_WORKER)
    services.step_succeed(run_id=run.id, index=1, output={"text": "two"})
    services.run_succeed(run_id=run.id, output=[{"text": "one"}, {"text": "two"}])
    return run


def test_a_retried_step_shows_each_attempt_as_its_own_bar(browser, server, alice):
    run = retried_run(alice)
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page = timeline_page(browser, server.url, alice, viewport)
        page.goto(f"/runs/{run.id}/")
        loaded(page, run)
        assert rows(page) == [
            ("run", "succeeded"),
            ("step-0-1", "lost"),
            ("step-0-2", "succeeded"),
            ("step-1-1", "succeeded"),
        ]
        assert page.get_attribute('[data-row="step-0-2"]', "data-attempt") == "2"
        # The steps table says the step ran twice, and why (issue 22: nothing told the user).
        note = page.text_content('.steps tr[data-index="0"] .attempts')
        assert note == "started 2 times: its first attempt was interrupted", note
        assert page.query_selector('.steps tr[data-index="1"] .attempts') is None
        assert "attempt 2" in page.text_content('[data-row="step-0-2"] .tl-label')
        # Each attempt names its worker: the lost one's, then the one that took the step over.
        workers = page.eval_on_selector_all(
            ".run-timeline .tl-row", "rows => rows.map(r => [r.dataset.row, r.dataset.worker || null])"
        )
        assert workers == [
            ["run", None],
            ["step-0-1", FIRST_WORKER],
            ["step-0-2", SECOND_WORKER],
            ["step-1-1", SECOND_WORKER],
        ]
        assert page.text_content('[data-row="step-0-1"] .tl-worker') == FIRST_WORKER
        assert page.text_content('[data-row="step-0-2"] .tl-worker') == SECOND_WORKER
        # ... in full on the row, not cut off: neither the label nor the name is clipped.
        clipped = page.eval_on_selector_all(
            ".run-timeline .tl-label, .run-timeline .tl-worker",
            "els => els.filter(e => e.scrollWidth > e.clientWidth).map(e => e.textContent)",
        )
        assert clipped == [], clipped
        # Each bar is drawn where its times put it: attempt 2 starts where attempt 1 ends.
        first, second = (
            page.eval_on_selector(f'[data-row="{row}"] .tl-exec', "b => b.getBoundingClientRect().toJSON()")
            for row in ("step-0-1", "step-0-2")
        )
        assert first["width"] >= 2 and second["width"] >= 2
        assert abs(first["x"] + first["width"] - second["x"]) <= 1.5
        text = page.text_content('[data-row="step-0-1"] .visually-hidden')
        assert text.startswith(
            f"Step 1 (echo), attempt 1 of 2: executor lost, taken over, on {FIRST_WORKER}"
        ), text
        text = page.text_content('[data-row="step-0-2"] .visually-hidden')
        assert text.startswith(f"Step 1 (echo), attempt 2 of 2: succeeded, on {SECOND_WORKER}"), text
        assert page.get_attribute('[data-row="step-0-2"]', "title") == text
        assert CLOCK.search(text), text
        shot(page, f"retried-{name}")
        page.context.close()


def test_a_failed_run_shows_failure_marks_and_the_skipped_rest(browser, server, alice):
    run = services.run_create(owner=alice, steps=PLAN, prompt="failed")
    services.run_start(run_id=run.id)
    services.step_start(run_id=run.id, index=0)
    services.step_fail(run_id=run.id, index=0, error="ToolError: no")
    page = timeline_page(browser, server.url, alice)
    page.goto(f"/runs/{run.id}/")
    loaded(page, run)
    assert rows(page) == [("run", "failed"), ("step-0-1", "failed"), ("step-1", "skipped")]
    assert marks(page, "step-0-1") == ["failure"]
    assert marks(page, "run") == ["failure"]
    assert marks(page, "step-1") == ["skip"]
    assert page.get_attribute('[data-row="step-0-1"] [data-mark]', "title") == "ToolError: no"
    shot(page, "failed-desktop")


def test_a_run_whose_log_was_pruned_shows_its_recorded_times(browser, server, alice):
    run = services.run_create(owner=alice, steps=PLAN, prompt="pruned")
    services.run_start(run_id=run.id)
    services.step_start(run_id=run.id, index=0)
    services.step_succeed(run_id=run.id, index=0, output={"text": "one"})
    services.step_start(run_id=run.id, index=1)
    services.step_fail(run_id=run.id, index=1, error="ToolError: no")
    assert retention.prune_run_events(days=0) == 6
    page = timeline_page(browser, server.url, alice)
    page.goto(f"/runs/{run.id}/")
    page.wait_for_selector('.run-timeline [data-row="run"][data-status="failed"]')
    assert rows(page) == [("run", "failed"), ("step-0-1", "succeeded"), ("step-1-1", "failed")]
    assert marks(page, "step-1-1") == ["failure"]
    assert "pruned from the log" in page.text_content(".run-timeline [data-timeline=note]")
    assert page.is_hidden(".run-timeline [data-timeline=replay]")
    shot(page, "pruned-desktop")


def test_a_cancelled_run_shows_a_cancel_mark_on_the_admin_page(browser, server, alice, staff):
    run = services.run_create(owner=alice, steps=PLAN, prompt="cancelled")
    services.run_start(run_id=run.id)
    services.step_start(run_id=run.id, index=0)
    services.run_cancel(run_id=run.id)  # asked while step 0 runs: the executor stops before the next
    services.run_cancel_finish(run_id=run.id)
    page = timeline_page(browser, server.url, staff)
    page.goto(f"/admin/runs/run/{run.id}/change/")
    loaded(page, run)
    assert rows(page) == [("run", "cancelled"), ("step-0-1", "skipped"), ("step-1", "skipped")]
    assert marks(page, "run") == ["cancel"]
    assert page.text_content(".run-timeline h3") == "Timeline"  # under the panel's h2
    shot(page, "cancelled-admin-desktop")
    phone = timeline_page(browser, server.url, staff, PHONE)
    phone.goto(f"/admin/runs/run/{run.id}/change/")
    loaded(phone, run)
    shot(phone, "cancelled-admin-phone")


def test_bars_appear_live_as_steps_start_on_the_page_s_one_socket(browser, server, alice):
    # The worker starts once the page watches the queued run: every step starts in its view.
    run = services.run_create(owner=alice, steps=[{"tool": "wait", "args": {"seconds": 1}}] * 3)
    page = timeline_page(browser, server.url, alice)
    # The home page the login lands on has its live list's socket: count the run page's alone.
    page.wait_for_selector('#connection[data-state="live"]')
    page.sockets.clear()
    page.goto(f"/runs/{run.id}/")
    page.wait_for_selector('[data-field=connection][data-state="live"]')
    assert rows(page) == [
        ("run", "queued"),
        ("step-0", "pending"),
        ("step-1", "pending"),
        ("step-2", "pending"),
    ]
    with celery_worker(env=subprocess_env(DJANGO_ALLOW_ASYNC_UNSAFE="")) as worker:
        for index in range(3):
            page.wait_for_selector(f'[data-row="step-{index}-1"][data-status="running"] .tl-exec.tl-open')
            if index == 1:
                shot(page, "live-desktop")
        page.wait_for_selector('.run-timeline [data-row="run"][data-status="succeeded"]')
    loaded(page, run)
    assert rows(page) == [("run", "succeeded")] + [(f"step-{i}-1", "succeeded") for i in range(3)]
    # Each bar names the real worker that executed it: its node name (-n).
    workers = [page.get_attribute(f'[data-row="step-{i}-1"]', "data-worker") for i in range(3)]
    assert workers == [worker.node_name] * 3
    assert page.get_attribute(".run-timeline", "data-live") == "false"
    # The live bars came over the page's run socket: the timeline opened none of its own,
    # and read the log once, when the page opened (the queued run had no event yet).
    assert len(page.sockets) == 1 and f"/ws/runs/{run.id}/" in page.sockets[0], page.sockets
    assert [url.split("/api/")[1] for url in page.event_reads] == [f"runs/{run.id}/events/?since=0"]


def test_the_replay_control_steps_through_the_events(browser, server, alice):
    run = retried_run(alice)
    run.refresh_from_db()
    last = run.seq  # run_status, 0 started, 0 again, 0 succeeded, 1 started, 1 succeeded, completed
    assert last == 7
    page = timeline_page(browser, server.url, alice)
    page.goto(f"/runs/{run.id}/")
    loaded(page, run)
    readout = ".run-timeline [data-replay=readout]"
    assert page.text_content(readout).startswith(f"seq {last} of {last} · run_completed · ")

    page.click("[data-replay=first]")
    page.wait_for_selector('.run-timeline[data-seq="0"]')
    assert page.text_content(readout) == f"seq 0 of {last} · before the first event: the run is queued"
    assert rows(page) == [("run", "queued"), ("step-0", "pending"), ("step-1", "pending")]
    off = ".run-timeline [data-replay={}][aria-disabled=true]"
    assert page.query_selector(off.format("prev")) and page.query_selector(off.format("first"))
    page.focus("[data-replay=prev]")
    page.keyboard.press("Enter")  # nothing before the first event: stays
    assert page.get_attribute(".run-timeline", "data-seq") == "0"

    page.click("[data-replay=next]")
    page.wait_for_selector('.run-timeline[data-seq="1"]')
    assert re.fullmatch(
        rf"seq 1 of {last} · run_status · {CLOCK.pattern} · run processing", page.text_content(readout)
    )
    page.click("[data-replay=next]")
    page.click("[data-replay=next]")
    page.wait_for_selector('.run-timeline[data-seq="3"]')  # step 0's step_retried
    assert re.fullmatch(
        rf"seq 3 of {last} · step_retried · {CLOCK.pattern}"
        rf" · step 1 \(echo\) retried, attempt 2, on {SECOND_WORKER}",
        page.text_content(readout),
    )
    assert rows(page) == [
        ("run", "processing"),
        ("step-0-1", "lost"),
        ("step-0-2", "running"),
        ("step-1", "pending"),
    ]
    shot(page, "replay-seq-3-desktop")
    page.click("[data-replay=prev]")
    page.wait_for_selector('.run-timeline[data-seq="2"]')
    assert rows(page) == [("run", "processing"), ("step-0-1", "running"), ("step-1", "pending")]

    # The keyboard: the slider takes arrows, Home and End; the buttons Enter and Space.
    page.focus("[data-replay=slider]")
    page.keyboard.press("ArrowRight")
    page.wait_for_selector('.run-timeline[data-seq="3"]')
    page.keyboard.press("Home")
    page.wait_for_selector('.run-timeline[data-seq="0"]')
    page.keyboard.press("End")
    page.wait_for_selector(f'.run-timeline[data-seq="{last}"][data-following="true"]')
    assert page.get_attribute("[data-replay=slider]", "aria-valuetext") == page.text_content(readout)
    page.focus("[data-replay=next]")
    page.keyboard.press("Enter")  # at the last event: nothing to do, and the focus stays put
    assert page.evaluate("document.activeElement.dataset.replay") == "next"
    assert page.get_attribute(".run-timeline", "data-seq") == str(last)
    page.focus("[data-replay=first]")
    page.keyboard.press("Enter")
    page.wait_for_selector('.run-timeline[data-seq="0"]')

    # Play walks every event in order to the last, then stops (and follows the run again).
    page.evaluate(
        """() => { window.__seqs = []; new MutationObserver(() => window.__seqs.push(Number(
             document.querySelector('.run-timeline').dataset.seq))).observe(
             document.querySelector('.run-timeline'), {attributes: true, attributeFilter: ['data-seq']}); }"""
    )
    page.focus("[data-replay=play]")
    page.keyboard.press("Space")
    assert page.get_attribute("[data-replay=play]", "aria-pressed") == "true"
    page.wait_for_selector(f'.run-timeline[data-seq="{last}"][data-following="true"]')
    page.wait_for_selector('[data-replay=play][aria-pressed="false"]')
    seqs = page.evaluate("window.__seqs")
    assert sorted(set(seqs)) == list(range(last + 1)) and seqs == sorted(seqs), seqs
    phone = timeline_page(browser, server.url, alice, PHONE)
    phone.goto(f"/runs/{run.id}/")
    loaded(phone, run)
    phone.click("[data-replay=first]")
    phone.click("[data-replay=next]")
    phone.click("[data-replay=next]")
    phone.wait_for_selector('.run-timeline[data-seq="2"]')
    shot(phone, "replay-seq-2-phone")
