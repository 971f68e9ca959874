"""realtime.events.log's lean write: the published frame is the logged event.

The writer encodes each payload once, stores those bytes and splices the
frame around them (realtime.protocol.frames.frame_text). Every event type, with
payloads holding non-ASCII text, quotes, floats, nulls and timestamps, must
publish byte for byte ``encode_event`` of the event it returns, and the same
JSON as ``encode_event`` of the row read back from the log — what the poller,
gap fill and the events API send (PostgreSQL's jsonb orders keys its own way).
"""

import json
import uuid

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from realtime.events import log, publisher
from realtime.models import RunEvent
from realtime.protocol import frames
from runs import executor, services
from runs.models import Run

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.usefixtures("dispatched"),
]


@pytest.fixture
def published(monkeypatch):
    sent: list[tuple[RunEvent, str]] = []
    monkeypatch.setattr(publisher, "publish", lambda event, *, text=None: sent.append((event, text)))
    return sent


def _plan(*tools):
    args = {"echo": {"text": 'héllo ✓ "quoted" \\ done', "x": 1.5, "none": None}, "fail": {}}
    return [{"tool": tool, "args": args[tool]} for tool in tools]


def test_every_published_frame_is_its_logged_event(user, published):
    succeeded = services.run_create(owner=user, steps=_plan("echo", "echo"))
    failed = services.run_create(owner=user, steps=_plan("echo", "fail", "echo"))  # step_failed, step_skipped
    executor.execute_run(run_id=succeeded.id)
    executor.execute_run(run_id=failed.id)
    retried = services.run_create(owner=user, steps=_plan("echo"))  # step_retried: a take-over's attempt
    services.run_start(run_id=retried.id)
    services.step_start(run_id=retried.id, index=0)
    services.step_retry(run_id=retried.id, index=0)

    types = {event.type for event, _ in published}
    assert types == set(frames.EVENT_TYPES)
    for event, text in published:
        logged = RunEvent.objects.get(run_id=event.run_id, seq=event.seq)
        assert text == frames.encode_event(event)  # byte for byte
        assert json.loads(text) == json.loads(frames.encode_event(logged))
        assert event.pk == logged.pk and event.ts == logged.ts


def test_seq_and_event_are_one_statement_on_postgresql(user, published):
    run = services.run_create(owner=user, steps=_plan("echo"))
    services.run_start(run_id=run.id)
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        event = log.append(run_id=run.id, type=frames.RUN_STATUS, payload={"status": "processing"})
    assert [q["sql"].split()[0] for q in queries] == ["WITH"], queries.captured_queries
    assert event.seq == 2 and RunEvent.objects.filter(run_id=run.id).count() == 2


def test_appending_to_a_missing_run_raises_and_writes_nothing(published):
    with pytest.raises(Run.DoesNotExist):
        log.append(run_id=uuid.uuid4(), type=frames.RUN_STATUS, payload={})
    assert not RunEvent.objects.exists() and published == []
