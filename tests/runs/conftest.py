"""Fixtures of the runs tests: runs in a given state, held leases, temporary tools."""

import threading
from collections.abc import Callable, Iterator

import pytest
from django.db import connection

from runs import services
from runs.leases import run_lease
from runs.models import Run, RunStatus
from runs.tools import registry


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Users are created in almost every test here; the real hasher is slow on purpose."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _no_real_dispatch(request, monkeypatch):
    """Outside e2e tests nothing reaches the broker (a real worker of this session would run it)."""
    if request.node.get_closest_marker("e2e") is None:
        monkeypatch.setattr("runs.dispatch._send", lambda run_id: None)


ECHO3 = [{"tool": "echo", "args": {"n": i}} for i in range(3)]


@pytest.fixture
def make_run(user) -> Callable[..., Run]:
    """A run brought to ``status`` through the services, as production code would."""

    def make(status: str = RunStatus.QUEUED, *, steps=None, owner=None, prompt: str = "") -> Run:
        run = services.run_create(owner=owner or user, steps=steps or ECHO3, prompt=prompt)
        if status == RunStatus.PROCESSING:
            services.run_start(run_id=run.id)
        elif status == RunStatus.SUCCEEDED:
            services.run_start(run_id=run.id)
            services.run_succeed(run_id=run.id, output=[])
        elif status == RunStatus.FAILED:
            services.run_fail(run_id=run.id, error="made failed")
        elif status == RunStatus.CANCELLED:
            services.run_cancel(run_id=run.id)
        return Run.objects.get(pk=run.id)

    return make


@pytest.fixture
def hold_lease() -> Iterator[Callable[[object], None]]:
    """Hold a run's lease from another thread (so another database connection), as a live executor would."""
    stops: list[threading.Event] = []
    threads: list[threading.Thread] = []

    def hold(run_id) -> None:
        taken, stop = threading.Event(), threading.Event()

        def holder():
            try:
                with run_lease(run_id) as acquired:
                    assert acquired
                    taken.set()
                    stop.wait(30)
            finally:
                connection.close()

        thread = threading.Thread(target=holder, daemon=True)
        thread.start()
        assert taken.wait(10), "the lease holder thread could not take the lease"
        stops.append(stop)
        threads.append(thread)

    yield hold
    for stop in stops:
        stop.set()
    for thread in threads:
        thread.join(10)


@pytest.fixture
def temporary_tools() -> Iterator[None]:
    """Tools registered during the test are unregistered after it."""
    saved = dict(registry._registry)
    yield
    registry._registry.clear()
    registry._registry.update(saved)
