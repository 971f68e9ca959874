"""The executor's write path: statements per transition, and what one commit publishes.

A step's success and the next step's start (the run's start and its first
step, the last step's success and the run's) are one transaction each
(runs.services). These tests pin what that path costs in statements, so a
re-read or a second lock that comes back fails here, and that batching moves
no guarantee: every event published once, in seq order, and the run lists
given each commit's final summary.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from realtime.events import publisher
from realtime.reads import summaries
from realtime.runlist import list_feed
from runs import executor, services
from runs.models import Run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.usefixtures("push")]

ECHO3 = [{"tool": "echo", "args": {"n": i}} for i in range(3)]


@pytest.fixture
def push(settings):
    settings.REALTIME_MODE = "push"  # list_feed publishes summaries (polling mode publishes none)
    settings.RUNS_MAX_INFLIGHT_PER_USER = 1  # the default: a hand-over counts the owner's runs in flight


@pytest.fixture
def sent(monkeypatch):
    """What the writer hands the publisher after each commit: ("event", seq) and ("summary", dict)."""
    got: list[tuple[str, object]] = []
    monkeypatch.setattr(
        publisher, "publish", lambda event, **kwargs: got.append(("event", event.seq)) or True
    )
    monkeypatch.setattr(
        list_feed.publisher, "publish_summary", lambda summary: got.append(("summary", summary)) or True
    )
    return got


def _transactions(queries) -> list[list[str]]:
    """The statements of each transaction, in order (BEGIN … COMMIT), by their first word."""
    groups: list[list[str]] = []
    current: list[str] | None = None
    for query in queries:
        word = query["sql"].split()[0].upper()
        if word == "BEGIN":
            current = []
        elif word == "COMMIT":
            groups.append(current)
            current = None
        elif current is not None:
            current.append(word)
    return groups


def test_a_run_of_three_steps_is_four_transactions_of_few_statements(user, sent):
    """Kills: a re-read or a second lock of the run in a transition (e.g. starting the next
    step through step_start, which locks and reads the run again), one commit per event
    again, the steps re-read for a run this executor just started."""
    run = services.run_create(owner=user, steps=ECHO3)
    sent.clear()  # the new run's own line
    with CaptureQueriesContext(connection) as queries:
        assert executor.execute_run(run_id=run.id) == "succeeded"
    transactions = _transactions(queries.captured_queries)
    # run_start + step 0 started; step 0 succeeded + step 1 started; … ; step 2 + run succeeded.
    # Each: one locking read, then per event its write (UPDATE or INSERT) and its append (WITH … INSERT).
    assert [len(statements) for statements in transactions] == [5, 5, 5, 9], transactions
    assert transactions[1] == ["SELECT", "UPDATE", "WITH", "INSERT", "WITH"], transactions
    # The last one: the step and the run locked, their two writes and appends, the owner's
    # row and their waiting runs (the hand-over) — and nothing else.
    assert transactions[3].count("WITH") == 2 and transactions[3].count("UPDATE") == 2
    # Outside transactions: the lease and its release, the run read once, and one run-list
    # summary per commit; the steps of a run started here are not read.
    assert len(queries.captured_queries) - sum(len(t) + 2 for t in transactions) == 3 + 4
    assert [kind for kind, _ in sent].count("summary") == 4


def test_every_event_is_published_once_in_order_and_each_commit_s_final_summary_reaches_the_lists(user, sent):
    """Kills: a summary read before its transaction's last change (a line left one event
    behind until the run's next commit), a summary per event instead of per commit,
    an event of a batched commit published twice or not at all."""
    run = services.run_create(owner=user, steps=ECHO3)
    sent.clear()  # the new run's own line
    assert executor.execute_run(run_id=run.id) == "succeeded"
    assert [seq for kind, seq in sent if kind == "event"] == list(range(1, 9))
    lines = [summary for kind, summary in sent if kind == "summary"]
    # One summary per commit, with that commit's final state (read after it committed).
    assert [(line["seq"], line["status"]) for line in lines] == [
        (2, "processing"),
        (4, "processing"),
        (6, "processing"),
        (8, "succeeded"),
    ]
    assert [(line["steps_succeeded"], line["steps_running"]) for line in lines] == [
        (0, 1),
        (1, 1),
        (2, 1),
        (3, 0),
    ]
    assert lines[-1] == summaries.run_summary(run_id=run.id)


def test_a_cancel_asked_during_a_step_still_records_its_success_and_starts_nothing(user, sent):
    """Kills: the combined success-and-next-start dropping the finished step's success, or
    starting the next step although a cancel was asked."""
    run = services.run_create(owner=user, steps=ECHO3)
    services.run_start(run_id=run.id)
    services.step_start(run_id=run.id, index=0)
    services.run_cancel(run_id=run.id)
    assert services.step_succeed_and_start_next(run_id=run.id, index=0, output={"n": 0}) is None
    steps = list(Run.objects.get(pk=run.id).steps.order_by("index").values_list("status", flat=True))
    assert steps == ["succeeded"]
