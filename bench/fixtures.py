"""Bench data in the bench's own database: a user with a token, and runs.

Imported by the orchestrator after django.setup(). Runs to be watched are
created processing with a long plan of echo steps and are never dispatched:
the producer drives them (runs.services), so the event rate is the bench's.
"""

from __future__ import annotations

import time

from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from runs import services
from runs.models import RUN_TERMINAL, Run

USERNAME = "bench"
_owner = None


def token() -> str:
    global _owner
    _owner, _ = get_user_model().objects.get_or_create(username=USERNAME)
    return Token.objects.get_or_create(user=_owner)[0].key


def make_runs(count: int, *, steps: int) -> list[str]:
    """``count`` processing runs of ``steps`` echo steps, not dispatched to any worker."""
    ids = []
    plan = [{"tool": "echo", "args": {"i": i}} for i in range(steps)]
    for _ in range(count):
        # Created directly (run_create would enqueue it); every transition
        # after this goes through the services.
        run = Run.objects.create(owner=_owner, prompt="bench", plan=plan)
        services.run_start(run_id=run.id)
        ids.append(str(run.id))
    return ids


def final_seqs(run_ids: list[str]) -> dict[str, int]:
    return {str(pk): seq for pk, seq in Run.objects.filter(pk__in=run_ids).values_list("pk", "seq")}


def create_runs(count: int) -> list[str]:
    """Runs of three echo steps, enqueued for the Celery workers (run_create)."""
    plan = [{"tool": "echo", "args": {"n": n}} for n in range(3)]
    return [str(services.run_create(owner=_owner, steps=plan, prompt="bench").id) for _ in range(count)]


def wait_done(run_ids: list[str], *, timeout: float) -> int:
    """Wait until every run is finished (or ``timeout``); return how many are."""
    deadline = time.monotonic() + timeout
    while True:
        done = Run.objects.filter(pk__in=run_ids, status__in=RUN_TERMINAL).count()
        if done == len(run_ids) or time.monotonic() > deadline:
            return done
        time.sleep(0.05)
