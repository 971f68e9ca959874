"""The connect read (realtime.reads.selectors.connect_state) against the API's serializer.

On PostgreSQL a watcher's snapshot comes from the fast path
(realtime.reads.fast_snapshot, one statement), elsewhere from the ORM path and
RunSerializer (the reference). Whichever the database, it must be the API's
JSON in every state a run can be in, and refuse exactly as the API does; on
PostgreSQL the two paths are also compared directly.
"""

import json
import threading
import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection, connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token

from realtime.reads import selectors
from realtime.reads.connect_state import Refused
from realtime.reads.fast_snapshot import fast_snapshot
from runs import services
from runs.models import Run, Step
from runs.serializers import RunSerializer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("dispatched")]


def _as_json(value):
    return json.loads(json.dumps(value))


def _api_json(run_id) -> dict:
    run = Run.objects.select_related("owner").prefetch_related("steps").get(pk=run_id)
    return _as_json(RunSerializer(run).data)


def _snapshot(run_id, **who) -> dict:
    state = selectors.connect_state(run_id=run_id, since=None, **who)
    assert isinstance(state, selectors.ConnectState), state
    assert state.snapshot.seq == state.snapshot.run["seq"]
    return _as_json(state.snapshot.run)


def _runs_in_every_state(user) -> list:
    plan = [
        {"tool": "echo", "args": {"text": "héllo ✓", "n": [1, 2.5, None, {"deep": True}]}},
        {"tool": "echo", "args": {}},
        {"tool": "echo", "args": {"x": 1}},
    ]
    queued = services.run_create(owner=user, steps=plan, prompt="queued ✓")
    running = services.run_create(owner=user, steps=plan, prompt="")
    services.run_start(run_id=running.id)
    services.step_start(run_id=running.id, index=0, worker="celery@hôst-a")
    services.step_succeed(run_id=running.id, index=0, output={"echo": "héllo", "big": 2**60, "f": 0.1})
    services.step_start(run_id=running.id, index=1, worker="celery@hôst-a")
    services.step_retry(run_id=running.id, index=1, worker="web:hôst-b:4242")  # taken over
    failed = services.run_create(owner=user, steps=plan[:2])
    services.run_start(run_id=failed.id)
    services.step_start(run_id=failed.id, index=0)
    services.step_fail(run_id=failed.id, index=0, error="boom\nwith a second line")
    done = services.run_create(owner=user, steps=plan[:1])
    services.run_start(run_id=done.id)
    services.step_start(run_id=done.id, index=0)
    services.step_succeed(run_id=done.id, index=0, output=None)
    services.run_succeed(run_id=done.id, output={"answer": [42]})
    # A time with no microseconds: the format must still print them (settings' DATETIME_FORMAT).
    whole = datetime(2026, 11, 27, 12, 0, 5, tzinfo=UTC)
    Step.objects.filter(run_id=done.id).update(started_at=whole, finished_at=whole)
    Run.objects.filter(pk=done.id).update(started_at=whole)
    return [queued, running, failed, done]


def test_the_connect_read_is_the_api_json_in_every_state(user):
    for run in _runs_in_every_state(user):
        assert _snapshot(run.id, user=user) == _api_json(run.id), Run.objects.get(pk=run.id).status


def test_a_token_client_gets_the_same_snapshot_as_its_user(user):
    run = _runs_in_every_state(user)[1]
    key = Token.objects.create(user=user).key
    assert _snapshot(run.id, token_key=key) == _snapshot(run.id, user=user) == _api_json(run.id)


def test_the_snapshot_and_seq_agree_and_terminal_is_read_from_the_status(user):
    running, done = _runs_in_every_state(user)[1::2]
    state = selectors.connect_state(run_id=running.id, since=None, user=user)
    assert (state.snapshot.seq, state.snapshot.terminal) == (Run.objects.get(pk=running.id).seq, False)
    state = selectors.connect_state(run_id=done.id, since=None, user=user)
    assert state.snapshot.terminal is True


def test_access_is_refused_as_the_api_refuses_it(user, other_user, staff_user):
    run = _runs_in_every_state(user)[0]
    other_key = Token.objects.create(user=other_user).key
    staff_key = Token.objects.create(user=staff_user).key
    assert selectors.connect_state(run_id=run.id, since=None, user=other_user) == Refused.FORBIDDEN
    assert selectors.connect_state(run_id=run.id, since=None, token_key=other_key) == Refused.FORBIDDEN
    assert selectors.connect_state(run_id=uuid.uuid4(), since=None, user=user) == Refused.MISSING
    assert (
        selectors.connect_state(run_id=run.id, since=None, token_key="nosuchkey") == Refused.UNAUTHENTICATED
    )
    # Staff see every run, with a session or a token.
    assert _snapshot(run.id, user=staff_user) == _api_json(run.id)
    assert _snapshot(run.id, token_key=staff_key) == _api_json(run.id)
    # An inactive user's token is refused before the run is even considered.
    other_user.is_active = False
    other_user.save()
    assert (
        selectors.connect_state(run_id=uuid.uuid4(), since=None, token_key=other_key)
        == Refused.UNAUTHENTICATED
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)  # the step below commits on a connection of its own
def test_the_orm_snapshot_reads_run_and_steps_from_one_database_snapshot(user, monkeypatch):
    """A step committing between the run's read and its steps' read is in neither (the resync's read)."""
    run = services.run_create(owner=user, steps=[{"tool": "echo"}])
    services.run_start(run_id=run.id)
    services.step_start(run_id=run.id, index=0)
    seq = Run.objects.get(pk=run.id).seq
    read_steps = selectors.prefetch_related_objects

    def step_succeeds_then_read_steps(*args, **kwargs):
        def succeed():
            try:
                services.step_succeed(run_id=run.id, index=0, output={"done": True})
            finally:
                connections.close_all()

        writer = threading.Thread(target=succeed)
        writer.start()
        writer.join()
        return read_steps(*args, **kwargs)

    monkeypatch.setattr(selectors, "prefetch_related_objects", step_succeeds_then_read_steps)
    snapshot = selectors.run_snapshot(run_id=run.id, user=user)
    assert Run.objects.get(pk=run.id).seq > seq  # the step did commit meanwhile
    assert (snapshot.seq, snapshot.run["steps"][0]["status"]) == (seq, "running")


def test_resume_returns_the_backlog_with_the_snapshot(user):
    run = _runs_in_every_state(user)[1]
    state = selectors.connect_state(run_id=run.id, since=1, user=user)
    assert state.recovered is True
    assert [e.seq for e in state.backlog] == list(range(2, state.snapshot.seq + 1))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)  # run_snapshot sets REPEATABLE READ: its own transaction
def test_the_fast_path_answers_what_the_orm_path_answers(user, other_user, staff_user):
    """The reference (run_snapshot + user_for_token) and the fast path, side by side on PostgreSQL."""
    assert connection.vendor == "postgresql"
    runs = _runs_in_every_state(user)
    keys = {who: Token.objects.create(user=who).key for who in (user, other_user, staff_user)}
    for run_id in [run.id for run in runs] + [uuid.uuid4()]:
        assert fast_snapshot(run_id=run_id, user=None, token_key=None) == selectors.run_snapshot(
            run_id=run_id
        )
        for who in (user, other_user, staff_user):
            reference = selectors.run_snapshot(run_id=run_id, user=who)
            assert fast_snapshot(run_id=run_id, user=who, token_key=None) == reference
            by_token = fast_snapshot(run_id=run_id, user=None, token_key=keys[who])
            assert by_token == selectors.run_snapshot(
                run_id=run_id, user=selectors.user_for_token(key=keys[who])
            )
    assert fast_snapshot(run_id=runs[0].id, user=None, token_key="nosuchkey") == Refused.UNAUTHENTICATED
    assert selectors.user_for_token(key="nosuchkey") is None


@pytest.fixture(params=["iso-8601", None])
def drf_time_format(request, settings):
    """DRF's own DATETIME_FORMATs instead of the project's strftime one: its default
    ("iso-8601") and None (datetime objects, as a renderer would get them)."""
    from realtime.reads.fast_snapshot import _time_format

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DATETIME_FORMAT": request.param}
    _time_format.cache_clear()
    try:
        yield request.param
    finally:
        _time_format.cache_clear()  # read again once pytest-django's settings fixture has restored them


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_fast_path_formats_times_as_drf_does_with_drfs_own_formats(user, drf_time_format):
    assert connection.vendor == "postgresql"
    for run in _runs_in_every_state(user):
        reference = selectors.run_snapshot(run_id=run.id, user=user)
        assert fast_snapshot(run_id=run.id, user=user, token_key=None) == reference
    expected = "2026-11-27T12:00:05Z" if drf_time_format else datetime(2026, 11, 27, 12, 0, 5, tzinfo=UTC)
    assert reference.run["started_at"] == expected  # DRF's rendering, not the project's


# --- Any run: the connect read equals the serializer, on either backend -------------------------

_json_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
_json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**62), 2**62)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _json_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_json_text, inner, max_size=3),
    max_leaves=8,
)
# What each step of the plan gets up to before the run stops moving: the executor's moves.
_step_moves = st.lists(st.sampled_from(["succeed", "fail", "retry", "running"]), min_size=0, max_size=4)


@st.composite
def _any_run(draw):
    plan = [
        {"tool": "echo", "args": draw(st.dictionaries(_json_text, _json_value, max_size=3))}
        for _ in range(draw(st.integers(1, 4)))
    ]
    return {
        "plan": plan,
        "prompt": draw(_json_text),
        "moves": draw(_step_moves),
        "outputs": draw(st.lists(_json_value, min_size=4, max_size=4)),
        "end": draw(st.sampled_from(["open", "succeed", "cancel", "fail"])),
        "whole_seconds": draw(st.booleans()),
    }


def _make(user, spec) -> Run:
    """A run moved as the executor, the reaper and its owner would move it: ``spec``'s moves, then its end."""
    run = services.run_create(owner=user, steps=spec["plan"], prompt=spec["prompt"])
    moves = spec["moves"][: len(spec["plan"])]
    if moves or spec["end"] != "open":
        services.run_start(run_id=run.id)
    for index, move in enumerate(moves):
        services.step_start(run_id=run.id, index=index, worker=f"celery@hôst-{index}")
        if move == "running":
            break
        if move == "retry":
            services.step_retry(run_id=run.id, index=index, worker="web:hôst-b:4242")
            break
        if move == "fail":
            services.step_fail(run_id=run.id, index=index, error=f"boom {spec['outputs'][index]!r}")
            break
        services.step_succeed(run_id=run.id, index=index, output=spec["outputs"][index])
    status = Run.objects.get(pk=run.id).status
    if (
        status == "processing"
        and spec["end"] == "succeed"
        and not Step.objects.filter(run=run, status="running")
    ):
        services.run_succeed(run_id=run.id, output=spec["outputs"])
    elif status == "processing" and spec["end"] == "cancel":
        services.run_cancel(run_id=run.id)
        services.run_cancel_finish(run_id=run.id)
    elif status == "processing" and spec["end"] == "fail":
        services.run_fail(run_id=run.id, error="reaped")
    if spec["whole_seconds"]:  # a time with no microseconds still prints them
        whole = datetime(2026, 11, 27, 12, 0, 5, tzinfo=UTC)
        Step.objects.filter(run_id=run.id).exclude(started_at=None).update(started_at=whole)
        Run.objects.filter(pk=run.id).exclude(started_at=None).update(started_at=whole)
    return run


@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=_any_run())
def test_the_connect_read_of_any_run_is_the_serializers_json_on_either_backend(user, spec):
    """Runs of any plan, args, outputs and progress: the snapshot a watcher gets is RunSerializer's JSON.

    On PostgreSQL that read is the fast path (realtime.reads.fast_snapshot's one statement: also
    compared directly); on SQLite the ORM path. The same table of runs on both backends.
    """
    run = _make(user, spec)
    assert _snapshot(run.id, user=user) == _api_json(run.id), spec
    if connection.vendor == "postgresql":
        fast = fast_snapshot(run_id=run.id, user=user, token_key=None)
        assert _as_json(fast.run) == _api_json(run.id), spec
