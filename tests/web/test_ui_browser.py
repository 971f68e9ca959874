"""Issue 22's frictions, checked in Chromium (Playwright) against a real Daphne, Celery worker,
Redis and PostgreSQL: one time format everywhere, live lists, the owner's re-run, and the small
things a newcomer tripped on. Screenshots at 1280 and 390 px go to test-artifacts/browser/.
"""

from __future__ import annotations

import re

import pytest

from runs import services
from runs.display import to_second
from tests.web import test_browser
from tests.web.test_browser import log_in, shot, wait_for_state

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
