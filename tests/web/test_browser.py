"""The pages and the admin in a real browser: Debian's Chromium under Playwright, against a real
Daphne, Celery worker, Redis and PostgreSQL.

Nothing here reloads a page after it opened: each page marks its window on
load and the tests check the mark is still there at the end. Screenshots of
the run page, the list and the admin go to test-artifacts/browser/ (not
committed), for a person to look at.
"""

from __future__ import annotations

import re

import pytest

from runs import services
from runs.models import Run
from tests.processes import ROOT, celery_worker, daphne_server, free_port, subprocess_env

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]

ARTIFACTS = ROOT / "test-artifacts" / "browser"
WAIT_MS = 60_000  # a bound on waiting for what must happen, not a timing assertion
PASSWORD = "pw-browser-123"

# Timing of the client for these tests: the polling fallback probes the socket every 2 s
# instead of 15 s, so "back to the socket" happens within a test's patience.
CLIENT_TIMING = (
    "globalThis.quikdayRealtimeOptions = {socketRetryMs: 2000, pollIntervalMs: 500, maxDelayMs: 2000};"
)
# Every applied change, as the page saw it; and a mark that a reload would wipe.
RECORDER = """
window.__changes = [];
document.addEventListener("quikday:run-change", (e) => window.__changes.push(e.detail));
window.__loadedOnce = true;
"""


@pytest.fixture
def stack():
    """A Daphne server and a Celery worker on the test database; the server can be restarted."""
    env = subprocess_env(DJANGO_ALLOW_ASYNC_UNSAFE="")
    with celery_worker(env=env), daphne_server(env=env, port=free_port()) as server:
        yield {"server": server, "env": env}


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user(username="alice", password=PASSWORD)


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        username="root", password=PASSWORD, is_staff=True, is_superuser=True
    )


def new_page(browser, base_url: str, *, width: int = 1200, height: int = 900):
    context = browser.new_context(base_url=base_url, viewport={"width": width, "height": height})
    context.add_init_script(CLIENT_TIMING + RECORDER)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    return page


def log_in(page, user) -> None:
    page.goto("/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def not_reloaded(page) -> bool:
    return page.evaluate("window.__loadedOnce === true")


def step_statuses(page) -> list[str]:
    return page.eval_on_selector_all("[data-field=steps] tr", "rows => rows.map(r => r.dataset.status)")


def change_seqs(page) -> list[int]:
    return page.evaluate("window.__changes.map(c => c.seq)")


def wait_for_state(page, state: str, selector: str = "[data-field=connection]") -> None:
    page.wait_for_selector(f'{selector}[data-state="{state}"]')


def finished_exactly_once(page, run: Run) -> None:
    """Every step shown once, succeeded; every change applied once, in seq order, up to the last."""
    page.wait_for_selector("[data-field=status].status-succeeded")
    run.refresh_from_db()
    assert step_statuses(page) == ["succeeded"] * len(run.plan)
    seqs = change_seqs(page)
    assert seqs == sorted(set(seqs)), seqs
    assert seqs[-1] == run.seq == 2 + 2 * len(run.plan)  # run_status, 2 per step, run_completed
    assert page.get_attribute("[data-field=progress]", "aria-valuenow") == str(len(run.plan))
    assert page.get_attribute("[data-field=progress]", "data-percent") == "100"
    assert not_reloaded(page)


def test_create_a_run_from_the_form_and_watch_it_and_the_list_live(browser, stack, alice):
    server = stack["server"]
    run_list = new_page(browser, server.url)
    log_in(run_list, alice)
    run_list.goto("/runs/")
    wait_for_state(run_list, "live", "#connection")

    page = new_page(browser, server.url)
    log_in(page, alice)
    page.goto("/runs/new/")
    page.fill("#prompt", "four waits from the form")
    page.click("#add-step")  # a fourth row
    for row in range(4):
        page.select_option(f"#step-{row}-tool", "wait")
        page.fill(f"#step-{row}-arg-wait-seconds", "0.7")
    # Only the picked tool's fields show (the others are hidden and not sent).
    assert page.is_hidden("#step-0-arg-fail-message") and page.is_visible("#step-0-arg-wait-seconds")
    shot(page, "run-new-form")
    page.click("button.primary")
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}/$"))
    run = Run.objects.get(prompt="four waits from the form")
    assert run.plan == [{"tool": "wait", "args": {"seconds": 0.7}}] * 4

    # The steps appear and the bar moves while it runs.
    page.wait_for_selector('[data-field=steps] tr[data-index="1"][data-status="running"]')
    wait_for_state(page, "live")
    assert page.text_content("[data-field=mode]") == "push"
    shot(page, "run-page-running")
    finished_exactly_once(page, run)
    assert page.is_hidden("[data-field=cancel]")  # nothing to cancel any more
    durations = page.eval_on_selector_all(
        "[data-field=steps] td.duration", "cells => cells.map(c => c.textContent)"
    )
    assert all(re.fullmatch(r"\d+\.\d s", d) for d in durations), durations
    shot(page, "run-page-finished")

    # The list page, open all along, got the new run and its status change.
    row = f'#runs tr[data-run-id="{run.id}"]'
    run_list.wait_for_selector(f'{row}[data-status="succeeded"]')
    assert run_list.text_content(f"{row} .count") == "4/4"
    assert not_reloaded(run_list)
    shot(run_list, "run-list")

    phone = new_page(browser, server.url, width=390, height=844)
    log_in(phone, alice)
    phone.goto(f"/runs/{run.id}/")
    phone.wait_for_selector('[data-field=connection][data-state="closed"]')
    shot(phone, "run-page-phone")


def test_the_page_survives_a_server_restart_mid_run(browser, stack, alice):
    server, env = stack["server"], stack["env"]
    page = new_page(browser, server.url)
    log_in(page, alice)
    run = services.run_create(owner=alice, steps=[{"tool": "wait", "args": {"seconds": 1.5}}] * 6)
    page.goto(f"/runs/{run.id}/")
    wait_for_state(page, "live")
    page.wait_for_selector('[data-field=steps] tr[data-index="0"][data-status="succeeded"]')

    server.stop()  # mid-run: the worker goes on, the page loses its socket
    wait_for_state(page, "reconnecting")
    assert Run.objects.get(pk=run.id).status == "processing"
    shot(page, "run-page-reconnecting")
    with daphne_server(env=env, port=server.port):
        finished_exactly_once(page, run)
    assert page.text_content("[data-field=connection]") == "closed (run finished)"


def test_with_websockets_blocked_the_page_polls_then_returns_to_the_socket(browser, stack, alice):
    server = stack["server"]
    blocked = {"on": True}

    def proxy(ws):
        if blocked["on"]:
            ws.close(code=1011, reason="blocked by a proxy")
        else:
            ws.connect_to_server()

    page = new_page(browser, server.url)
    page.route_web_socket(re.compile(r".*/ws/.*"), proxy)
    log_in(page, alice)
    run = services.run_create(owner=alice, steps=[{"tool": "wait", "args": {"seconds": 1}}] * 8)
    page.goto(f"/runs/{run.id}/")
    wait_for_state(page, "polling")
    assert page.text_content("[data-field=mode]") == "http"
    page.wait_for_selector('[data-field=steps] tr[data-index="1"][data-status="succeeded"]')
    assert Run.objects.get(pk=run.id).status == "processing"
    shot(page, "run-page-polling")

    blocked["on"] = False  # the proxy lets WebSockets through again
    wait_for_state(page, "live")
    finished_exactly_once(page, run)


def test_with_websockets_blocked_all_along_the_run_completes_by_polling(browser, stack, alice):
    server = stack["server"]
    page = new_page(browser, server.url)
    page.route_web_socket(re.compile(r".*/ws/.*"), lambda ws: ws.close(code=1011, reason="blocked"))
    log_in(page, alice)
    run = services.run_create(owner=alice, steps=[{"tool": "wait", "args": {"seconds": 1}}] * 4)
    page.goto(f"/runs/{run.id}/")
    wait_for_state(page, "polling")
    finished_exactly_once(page, run)
    assert page.text_content("[data-field=mode]") == "http"


def test_admin_change_page_and_change_list_update_live(browser, stack, alice, staff):
    server = stack["server"]
    change_list = new_page(browser, server.url)
    log_in(change_list, staff)
    change = new_page(browser, server.url)
    log_in(change, staff)
    # A first run keeps the worker (concurrency 1) busy: the list shows the second one queued.
    services.run_create(owner=alice, steps=[{"tool": "wait", "args": {"seconds": 3}}], prompt="first")
    run = services.run_create(
        owner=alice, steps=[{"tool": "wait", "args": {"seconds": 1.5}}] * 4, prompt="admin"
    )
    change_list.goto("/admin/runs/run/")
    wait_for_state(change_list, "live", "#live-connection")
    assert change_list.text_content(f'[data-run-status="{run.id}"]') in ("queued", "processing")

    change.goto(f"/admin/runs/run/{run.id}/change/")
    change.wait_for_selector('[data-field=steps] tr[data-status="running"]')
    assert change.query_selector('select[name="status"]') is None  # no raw status dropdown
    assert change.is_visible("[data-field=cancel] button")
    shot(change, "admin-change-running")
    finished_exactly_once(change, run)
    times = change.text_content("[data-field=times]")
    assert re.search(r"Finished\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", times), times
    shot(change, "admin-change-finished")

    change_list.wait_for_selector(f'[data-run-status="{run.id}"].status-succeeded')
    assert change_list.text_content(f'[data-run-progress="{run.id}"] .count') == "4/4"
    assert not_reloaded(change_list)
    shot(change_list, "admin-change-list")

    # Re-run: a new run, linked from the message, and it shows up on the list live.
    change.click("form.qd-tool button")
    link = change.wait_for_selector("ul.messagelist a")
    new_id = link.get_attribute("href").split("/")[-3]
    assert Run.objects.filter(pk=new_id, plan=run.plan).exists()


def test_a_failed_run_shows_failed_and_skipped_steps_as_such(browser, stack, alice):
    server = stack["server"]
    page = new_page(browser, server.url)
    log_in(page, alice)
    steps = [{"tool": "wait", "args": {"seconds": 0.5}}, {"tool": "fail", "args": {"message": "no"}}]
    run = services.run_create(owner=alice, steps=[*steps, {"tool": "wait", "args": {"seconds": 0.5}}])
    page.goto(f"/runs/{run.id}/")
    page.wait_for_selector("[data-field=status].status-failed")
    assert step_statuses(page) == ["succeeded", "failed", "skipped"]
    assert (
        page.text_content("[data-field=progress-text]")
        == "1 of 3 steps succeeded (33 %) · 1 failed · 1 skipped"
    )
    assert page.get_attribute("[data-field=progress]", "aria-valuenow") == "1"  # failed is not done
    assert "step 2 (fail) failed: no" in page.text_content("[data-field=error]")
    assert page.text_content('[data-field=steps] tr[data-index="1"] td.output') == "no"
    assert page.is_hidden("[data-field=cancel]")
    shot(page, "run-page-failed")
