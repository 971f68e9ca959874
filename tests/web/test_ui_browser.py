"""Issue 22's frictions, checked in Chromium (Playwright) against a real Daphne, Celery worker,
Redis and PostgreSQL: one time format everywhere, live lists, the owner's re-run, and the small
things a newcomer tripped on. Screenshots at 1280 and 390 px go to test-artifacts/browser/.
"""

from __future__ import annotations

import re

import pytest

from runs import services
from runs.display import to_second
from runs.models import Run
from tests.processes import daphne_server, free_port, subprocess_env
from tests.waiting import wait_for
from tests.web import test_browser
from tests.web.test_browser import log_in, new_page, not_reloaded, shot, wait_for_state

# The fixtures of the page tests: a Daphne and a Celery worker, a user, a staff user.
stack, alice, staff = test_browser.stack, test_browser.alice, test_browser.staff

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]

MOMENT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


def test_every_time_reads_alike_in_utc_whatever_the_browser_zone(browser, stack, staff):
    server = stack["server"]
    run = services.run_create(owner=staff, steps=[{"tool": "echo", "args": {"text": "t"}}], prompt="times")
    context = browser.new_context(
        base_url=server.url, viewport={"width": 1280, "height": 900}, timezone_id="America/Chicago"
    )
    page = context.new_page()
    log_in(page, staff)
    page.goto(f"/admin/runs/run/{run.id}/change/")
    page.wait_for_selector("[data-field=status].status-succeeded")
    run.refresh_from_db()
    server_created = page.text_content(".field-created .readonly").strip()
    panel = page.eval_on_selector_all("[data-field=times] dd", "cells => cells.map(c => c.textContent)")
    assert server_created == panel[0] == to_second(run.created_at), (server_created, panel)
    assert all(MOMENT.fullmatch(text) for text in panel), panel
    shot(page, "admin-change-times")

    page.goto("/admin/runs/run/")
    assert page.text_content(f'tr:has([data-run-status="{run.id}"]) .field-created').strip() == panel[0]

    page.goto("/runs/")
    wait_for_state(page, "live", "#connection")
    assert page.text_content(f'#runs tr[data-run-id="{run.id}"] td:last-child') == panel[0]

    page.goto("/admin/realtime/")
    page.wait_for_selector("#rt-updated:text-matches('^Updated')")
    assert re.fullmatch(r"Updated \d\d:\d\d:\d\d UTC", page.text_content("#rt-updated"))


def test_a_newcomer_finds_names_descriptions_marked_errors_and_a_logout_message(browser, stack, alice):
    from runs.tools import list_tools

    server = stack["server"]
    page = new_page(browser, server.url, width=1280)
    log_in(page, alice)
    icon = page.get_attribute("link[rel=icon]", "href")
    assert page.request.get(icon).status == 200  # no favicon 404

    # The select names the tools; the picked tool's whole description shows under it.
    page.goto("/runs/new/")
    assert page.eval_on_selector_all("#step-0-tool option", "os => os.map(o => o.textContent)") == [
        "— none —",
        *[tool.name for tool in list_tools()],
    ]
    page.select_option("#step-0-tool", "wait")
    wait = next(tool for tool in list_tools() if tool.name == "wait")
    assert page.is_visible('#steps [data-tool="wait"] .tool-description')
    assert page.text_content('#steps [data-tool="wait"] .tool-description') == f"wait: {wait.description}"

    # A value the server refuses: the message, and the field it is about marked and focused.
    page.eval_on_selector("#run-form", "form => { form.noValidate = true; }")
    page.fill("#step-0-arg-wait-seconds", "-1")
    page.click("button.primary")
    page.wait_for_selector("#form-error")
    field = "#step-0-arg-wait-seconds"
    assert page.get_attribute(field, "aria-invalid") == "true"
    assert page.get_attribute(field, "aria-errormessage") == "form-error"
    assert page.evaluate(f"document.activeElement === document.querySelector('{field}')")
    border = page.eval_on_selector(field, "e => getComputedStyle(e).borderTopColor")
    assert border == "rgb(192, 57, 43)", border  # --bad
    assert page.get_attribute("#step-0-tool", "aria-invalid") is None  # only the one at fault
    shot(page, "run-new-invalid")
    phone = new_page(browser, server.url, width=390, height=844)
    log_in(phone, alice)
    phone.goto("/runs/new/")
    phone.select_option("#step-0-tool", "wait")
    shot(phone, "run-new-phone")
    phone.context.close()

    # A run's page leads back to the list under the list's own name.
    run = services.run_create(owner=alice, steps=[{"tool": "echo", "args": {"t": "x"}}])
    page.goto(f"/runs/{run.id}/")
    assert (
        page.text_content("nav.crumbs")
        == f"Your runs \N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK} Run {str(run.id)[:8]}"
    )

    # A row the list adds live cuts a long prompt with "…", as the server's rows do.
    page.goto("/runs/")
    wait_for_state(page, "live", "#connection")
    prompt = "a prompt much longer than the forty characters a row shows"
    added = services.run_create(owner=alice, steps=[{"tool": "echo", "args": {"t": "x"}}], prompt=prompt)
    row = page.wait_for_selector(f'#runs tr[data-run-id="{added.id}"] td:first-child')
    assert row.text_content() == f"{str(added.id)[:8]} {prompt[:39]}…"
    assert not_reloaded(page)

    page.click("button.link")  # Log out
    page.wait_for_url(re.compile(r"/login/"))
    assert page.text_content(".messages").strip() == "You are logged out."
    shot(page, "logged-out")


def test_the_realtime_page_says_why_there_are_no_workers_in_embedded_mode(browser, staff):
    # Embedded: no Redis, runs execute inside the web process.
    env = subprocess_env(DJANGO_ALLOW_ASYNC_UNSAFE="", REDIS_URL="", RUNS_EXECUTOR="inline")
    with daphne_server(env=env, port=free_port()) as server:
        page = new_page(browser, server.url, width=1280)
        log_in(page, staff)
        page.goto("/admin/realtime/")
        cell = page.wait_for_selector("#rt-workers tbody td")
        assert cell.text_content() == "none: runs execute inside the web process (embedded mode)"
        shot(page, "realtime-embedded")


def test_the_home_pages_recent_runs_are_live(browser, stack, alice):
    server = stack["server"]
    page = new_page(browser, server.url, width=1280)
    log_in(page, alice)
    page.wait_for_selector('#connection[data-state="live"]', state="attached")
    assert page.is_hidden("#recent")  # no runs yet: the section shows with the first
    run = services.run_create(
        owner=alice, steps=[{"tool": "wait", "args": {"seconds": 0.5}}], prompt="made elsewhere"
    )
    item = f'#recent li[data-run-id="{run.id}"]'
    page.wait_for_selector(f'{item}[data-status="succeeded"]')
    assert page.text_content(f"{item} a") == f"{str(run.id)[:8]} made elsewhere"
    assert not_reloaded(page)
    shot(page, "home-recent-live")


def test_the_admin_list_fits_1280_px_and_adds_new_runs_live(browser, stack, alice, staff):
    server = stack["server"]
    first = services.run_create(owner=alice, steps=[{"tool": "echo", "args": {"t": "x"}}], prompt="first")
    page = new_page(browser, server.url, width=1280)
    log_in(page, staff)
    page.goto("/admin/runs/run/")
    wait_for_state(page, "live", "#live-connection")
    # Short ids (the full one in a title), and every column without a horizontal scroll.
    code = page.query_selector(f'#result_list code[title="{first.id}"]')
    assert code.text_content() == str(first.id)[:8]
    fits = "e => e.scrollWidth <= e.clientWidth"
    assert page.eval_on_selector("#changelist .results", fits)
    assert page.is_visible("#result_list .column-duration")

    run = services.run_create(owner=alice, steps=[{"tool": "wait", "args": {"seconds": 0.5}}] * 2)
    row = f'#result_list tbody tr:has([data-run-status="{run.id}"])'
    page.wait_for_selector(f'{row} [data-run-status="{run.id}"].status-succeeded')
    assert page.get_attribute(row, "data-live-added") == ""
    assert page.text_content(f"{row} [data-run-progress] .count") == "2/2"
    assert page.get_attribute(f"{row} th a", "href") == f"/admin/runs/run/{run.id}/change/"
    assert page.get_attribute(f"{row} input.action-select", "value") == str(run.id)
    assert page.text_content(f"{row} .field-owner") == "alice"
    # "N runs" counts each row once. (The staff list also shows any other run that appears
    # meanwhile: a run another test's lingering process finishes on this worker's Redis db.)
    shown = page.eval_on_selector_all("#result_list tbody tr", "rows => rows.length")
    assert shown >= 2
    assert page.text_content("#changelist .paginator").strip() == f"{shown} runs"
    # The actions' "0 of N selected" counts the added row, selected alone or by select-all
    # (Django's actions.js counted the rows of the page as drawn: "1 of 1" with 2 shown).
    counter = "#changelist .action-counter"
    assert page.text_content(counter).strip() == f"0 of {shown} selected"
    page.check(f"{row} input.action-select")
    assert page.text_content(counter).strip() == f"1 of {shown} selected"
    page.uncheck(f"{row} input.action-select")
    page.check("#action-toggle")
    assert page.is_checked(f"{row} input.action-select")
    assert page.text_content(counter).strip() == f"{shown} of {shown} selected"
    page.uncheck("#action-toggle")
    assert page.text_content(counter).strip() == f"0 of {shown} selected"
    assert page.eval_on_selector("#changelist .results", fits)
    assert not_reloaded(page)
    shot(page, "admin-list-live-1280")

    # Filtered, a new run does not belong in the rows: the page says there is one.
    page.goto("/admin/runs/run/?status__exact=failed")
    wait_for_state(page, "live", "#live-connection")
    unshown = services.run_create(owner=alice, steps=[{"tool": "echo", "args": {"t": "x"}}])
    page.wait_for_selector("#new-runs:not([hidden])")
    # Counted once, however many of its changes arrive (queued, processing, succeeded).
    wait_for(lambda: Run.objects.get(pk=unshown.pk).status == "succeeded", timeout=30)
    assert page.query_selector(f'#result_list [data-run-status="{unshown.id}"]') is None
    counted = page.text_content("#new-runs [data-count]")
    assert counted == "1 new run" or re.fullmatch(r"\d+ new runs", counted), counted

    phone = new_page(browser, server.url, width=390, height=844)
    log_in(phone, staff)
    phone.goto("/admin/runs/run/")
    wait_for_state(phone, "live", "#live-connection")
    shot(phone, "admin-list-phone")


def test_an_owner_reruns_a_run_from_its_page(browser, stack, alice):
    server = stack["server"]
    run = services.run_create(
        owner=alice, steps=[{"tool": "echo", "args": {"t": "again"}}], prompt="once more"
    )
    page = new_page(browser, server.url, width=1280)
    log_in(page, alice)
    page.goto(f"/runs/{run.id}/")
    page.wait_for_selector("[data-field=status].status-succeeded")
    page.click("[data-field=rerun] button")
    page.wait_for_url(re.compile(rf"/runs/(?!{run.id})[0-9a-f-]{{36}}/$"))
    new_id = page.url.rstrip("/").split("/")[-1]
    new = Run.objects.get(pk=new_id)
    assert (new.owner, new.plan, new.prompt) == (alice, run.plan, run.prompt)
    assert (
        page.text_content(".messages").strip()
        == f"A re-run of run {str(run.id)[:8]}: same prompt, same steps."
    )
    page.wait_for_selector("[data-field=status].status-succeeded")
    shot(page, "run-page-rerun")
    phone = new_page(browser, server.url, width=390, height=844)
    log_in(phone, alice)
    phone.goto(f"/runs/{new_id}/")
    phone.wait_for_selector("[data-field=status].status-succeeded")
    shot(phone, "run-page-rerun-phone")
