"""A run whose first enqueue failed (the broker kept its data) is enqueued again promptly, once.

Before: it stayed `queued` until the reaper, RUNS_STALE_AFTER_SECONDS (600 s) later.
"""

import threading
import time

import pytest
from django.db import transaction

from runs import dispatch, services
from runs.dispatch_retry import DispatchRetrier
from runs.models import Run, RunStatus
from tests.waiting import wait_for

ECHO = [{"tool": "echo", "args": {"n": 1}}]
# runs.dispatch's own send, taken before tests/runs/conftest.py replaces it in each non-e2e test.
REAL_SEND = dispatch._send


class FlakyBroker:
    """Refuses the first ``failures`` sends of each run, then takes them."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: dict[str, int] = {}
        self.taken: list[tuple[str, dict]] = []
        self.all_taken = threading.Event()

    def send(self, run_id, **options) -> None:
        self.attempts[run_id] = self.attempts.get(run_id, 0) + 1
        if self.attempts[run_id] <= self.failures:
            raise ConnectionError("broker unreachable")
        self.taken.append((run_id, options))
        self.all_taken.set()


def test_a_failed_send_is_retried_with_backoff_until_taken_once():
    broker = FlakyBroker(failures=3)
    retrier = DispatchRetrier(broker.send, first_delay=0.01, max_delay=0.04, give_up_after=30)
    started = time.monotonic()
    retrier.add("run-a", {"expires": 30.0})
    retrier.add("run-a", {"expires": 30.0})  # failed again meanwhile: still one pending retry
    assert broker.all_taken.wait(10)
    assert time.monotonic() - started >= 0.01 + 0.02 + 0.04 + 0.04 - 0.005  # backoff: 10, 20, 40, 40 ms
    retrier.thread.join(10) if retrier.thread else None
    assert broker.taken == [("run-a", {"expires": 30.0})]  # exactly one message, with its options
    assert broker.attempts == {"run-a": 4}


class RecordingRetrier:
    def __init__(self) -> None:
        self.added: list[tuple[str, dict]] = []

    def add(self, run_id, options: dict) -> None:
        self.added.append((run_id, options))


@pytest.mark.parametrize("expires, options", [(None, {}), (45.0, {"expires": 45.0})])
def test_a_refused_send_goes_to_the_retrier_with_the_messages_expiry(monkeypatch, caplog, expires, options):
    """A take-over's send keeps its expiry when sent again; a create's send gets none."""

    def refuse(run_id, *, expires=None):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    retrier = RecordingRetrier()
    monkeypatch.setattr(dispatch, "_enqueue", refuse)
    monkeypatch.setattr(dispatch, "_retrier", retrier)

    REAL_SEND("run-c", expires=expires)

    assert retrier.added == [("run-c", options)]
    assert [r.getMessage() for r in caplog.records] == [
        "could not enqueue run run-c (Error 111 connecting to 127.0.0.1:6379. Connection refused.);"
        " it stays queued and is dispatched again later"
    ]


def test_a_retrier_gives_up_after_its_window(caplog):
    broker = FlakyBroker(failures=10**6)
    retrier = DispatchRetrier(broker.send, first_delay=0.01, max_delay=0.01, give_up_after=0.1)
    retrier.add("run-b", {})
    wait_for(lambda: retrier.thread is None, what="the retrier to give up")
    assert broker.taken == [] and 5 <= broker.attempts["run-b"] <= 20
    assert "gave up enqueueing run run-b again" in caplog.text


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.e2e
def test_a_run_whose_enqueue_failed_runs_within_seconds(user, worker_process, monkeypatch, settings):
    """The broker refuses the create's send once (Redis keeps its data); a real worker runs it soon after."""
    from runs.tasks import execute_run

    settings.RUNS_DISPATCH_RETRY_DELAY = 0.5
    monkeypatch.setattr(dispatch, "_retrier", None)  # one made from this test's settings
    real_apply_async = execute_run.apply_async
    sends: list[tuple] = []

    def refuse_first(args, **options):
        sends.append(args)
        if len(sends) == 1:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return real_apply_async(args, **options)

    monkeypatch.setattr(execute_run, "apply_async", refuse_first)
    started = time.monotonic()
    with transaction.atomic():
        run = services.run_create(owner=user, steps=ECHO)  # dispatched on commit
    wait_for(
        lambda: Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED,
        timeout=30,
        what="the run to succeed",
    )
    elapsed = time.monotonic() - started
    assert elapsed < 30  # not RUNS_STALE_AFTER_SECONDS (600 s)
    assert sends == [(str(run.id),), (str(run.id),)]  # refused once, sent once more: no pile
    print(f"a run whose first enqueue failed succeeded {elapsed:.1f} s after its create")
