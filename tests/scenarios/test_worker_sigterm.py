"""A deploy stops the Procfile's worker with SIGTERM; its running run is finished or handed back in time.

Heroku (and most platforms) send SIGTERM, then SIGKILL 30 s later. Celery's
default for SIGTERM waits for every running task, however long: a run with a
long step would be SIGKILLed mid-step, its message left unacknowledged until
the broker's visibility timeout. The Procfile's worker turns SIGTERM into a
soft shutdown (REMAP_SIGTERM=SIGQUIT, WORKER_SOFT_SHUTDOWN_TIMEOUT): running
tasks go on for that long, then are cancelled and their messages requeued,
and the worker exits — within the grace period. Another worker resumes the
run: its finished steps kept, the interrupted one executed again.
"""

from __future__ import annotations

import signal

import pytest

from runs import services
from runs.models import Run, RunStatus, Step, StepStatus
from tests.processes import procfile_worker, subprocess_env
from tests.waiting import WAIT, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
    pytest.mark.timeout(300),
]

PLATFORM_GRACE_SECONDS = 30  # SIGTERM to SIGKILL on Heroku
SOFT_SHUTDOWN_SECONDS = 2
LONG_STEP_SECONDS = 30  # longer than the soft shutdown: it is still running when the worker gives it back


def _step_status(run_id, index: int) -> str | None:
    step = Step.objects.filter(run_id=run_id, index=index).first()
    return step and step.status


def test_sigterm_hands_a_long_running_run_back_within_the_grace_period_and_another_worker_finishes_it(user):
    plan = [
        {"tool": "echo", "args": {"text": "before"}},
        {"tool": "wait", "args": {"seconds": LONG_STEP_SECONDS}},
        {"tool": "echo", "args": {"text": "after"}},
    ]
    env = subprocess_env(WORKER_SOFT_SHUTDOWN_TIMEOUT=str(SOFT_SHUTDOWN_SECONDS))
    with procfile_worker(env) as deployed:
        run = services.run_create(owner=user, steps=plan)
        wait_for(lambda: _step_status(run.id, 1) == StepStatus.RUNNING, what="the long step to start")
        deployed.signal(signal.SIGTERM)
        # The platform's SIGKILL would come 30 s after the SIGTERM: the worker is gone before.
        deployed.popen.wait(timeout=PLATFORM_GRACE_SECONDS)
        log = deployed.log()
    assert "Initiating Soft Shutdown" in log and "Traceback" not in log
    # Handed back: nothing finished it, and its message is in the queue again (not lost until the
    # visibility timeout, an hour): the next worker takes it at once, no take-over sweep needed.
    run.refresh_from_db()
    assert run.status == RunStatus.PROCESSING

    with procfile_worker(subprocess_env()):
        wait_for(
            lambda: Run.objects.get(pk=run.id).status == RunStatus.SUCCEEDED,
            timeout=LONG_STEP_SECONDS + WAIT,
            what="the next release's worker to finish the run",
        )
    steps = {step.index: step for step in Step.objects.filter(run=run)}
    assert steps[0].attempts == 1, "a finished step is kept"
    assert steps[1].attempts == 2, "the interrupted step is executed again"
    assert steps[2].output == {"text": "after"}
