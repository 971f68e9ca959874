"""Executes a run's plan step by step, through services only.

Called by the Celery task (or the embedded executor) with a run id. Safe to
call twice for the same run: the lease lets one live executor through, and a
run that finished is left alone. An executor that takes over a run whose
previous executor died resumes it: finished steps are kept, and the step that
was running when it died is executed again (steps are at-least-once).
"""

import json
import logging
import uuid
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from runs import selectors, services
from runs.leases import run_lease
from runs.models import Run, RunStatus, Step, StepStatus
from runs.tools import StepExecution, get_tool

logger = logging.getLogger(__name__)


class Outcome:
    SKIPPED_BUSY = "busy"
    SKIPPED_MISSING = "missing"
    SKIPPED_FINISHED = "finished"
    SUCCEEDED = RunStatus.SUCCEEDED
    FAILED = RunStatus.FAILED
    CANCELLED = RunStatus.CANCELLED


def execute_run(*, run_id: uuid.UUID, after_error: bool = False, worker: str = "") -> str:
    """Run the plan of ``run_id`` to its end; return what happened.

    ``worker``: the name of the process executing it, recorded on each step
    attempt it starts (the timeline shows who executed what).

    ``after_error``: the previous execution stopped on a database error, not
    with a lost executor; its interrupted step is retried without counting
    towards RUNS_MAX_STEP_ATTEMPTS.
    """
    with run_lease(run_id) as acquired:
        if not acquired:
            logger.info("run %s is being executed elsewhere; nothing to do", run_id)
            return Outcome.SKIPPED_BUSY
        run = selectors.run_get(run_id=run_id)
        if run is None:
            return Outcome.SKIPPED_MISSING
        if run.is_terminal:
            return Outcome.SKIPPED_FINISHED
        try:
            started = None
            if run.status == RunStatus.QUEUED:
                started = services.run_start_with_first_step(run_id=run_id, worker=worker)
                if started is None:
                    return Outcome.SKIPPED_FINISHED
            return _execute_steps(run, started=started, after_error=after_error, worker=worker)
        except services.TransitionError as error:
            # Someone else (an operator, the reaper) finished the run meanwhile.
            logger.info("run %s was finished elsewhere during execution: %s", run_id, error)
            return Outcome.SKIPPED_FINISHED
        except (Run.DoesNotExist, Step.DoesNotExist):
            # An operator deleted it meanwhile: nothing is left to record anything on.
            logger.info("run %s was deleted during execution; stopping", run_id)
            return Outcome.SKIPPED_MISSING


def _execute_steps(run: Run, *, started: Step | None, after_error: bool, worker: str) -> str:
    """``started``: step 0, when this executor just started the run with it (nothing else
    exists yet); otherwise the run was processing already and its steps are read.

    A step's success and the next step's start (or the run's success) are one
    transaction: nothing happens between them.
    """
    run_id = run.id
    if started is not None:
        steps = {0: started}
    else:
        steps = {step.index: step for step in selectors.run_steps(run_id=run_id)}
    plan = run.plan
    outputs: list[Any] = []
    for index, spec in enumerate(plan):
        step = steps.get(index)
        if step is not None and step.status == StepStatus.SUCCEEDED:
            outputs.append(step.output)
            continue
        # A cancel request stops the run before its next step: step_start
        # refuses under the run's lock; a step found running (a resumed run) is
        # checked here.
        if step is None:
            step = services.step_start(run_id=run_id, index=index, worker=worker)
            if step is None:
                services.run_cancel_finish(run_id=run_id)
                return Outcome.CANCELLED
        elif step.status == StepStatus.RUNNING and step is not started:
            if selectors.run_cancel_requested(run_id=run_id):
                services.run_cancel_finish(run_id=run_id)
                return Outcome.CANCELLED
            # Its executor was lost mid-step: execute it again, unless it kept losing them.
            if not after_error and step.attempts >= settings.RUNS_MAX_STEP_ATTEMPTS:
                error = f"its executor was lost during each of its {step.attempts} attempts"
                services.step_fail(run_id=run_id, index=index, error=error)
                return Outcome.FAILED
            step = services.step_retry(run_id=run_id, index=index, worker=worker)
        execution = StepExecution(run_id=run_id, step_index=index, attempt=step.attempts)
        try:
            output = _call_tool(spec["tool"], spec.get("args", {}), execution)
        except Exception as error:  # noqa: BLE001 - any tool failure fails the step
            services.step_fail(run_id=run_id, index=index, error=_describe(error))
            return Outcome.FAILED
        outputs.append(output)
        if index + 1 == len(plan):
            services.step_succeed_and_run_succeed(
                run_id=run_id, index=index, output=output, run_output=outputs
            )
            return Outcome.SUCCEEDED
        if index + 1 in steps:
            # A resumed run whose next step exists already: its own branch above takes it.
            services.step_succeed(run_id=run_id, index=index, output=output)
            continue
        started = services.step_succeed_and_start_next(
            run_id=run_id, index=index, output=output, worker=worker
        )
        if started is None:
            services.run_cancel_finish(run_id=run_id)
            return Outcome.CANCELLED
        steps[index + 1] = started
    services.run_succeed(run_id=run_id, output=outputs)
    return Outcome.SUCCEEDED


def _call_tool(name: str, args: dict[str, Any], execution: StepExecution) -> Any:
    tool = get_tool(name)
    if tool is None:
        raise LookupError(f"tool '{name}' is no longer registered")
    output = tool.execute(args, execution)
    # Fail the step, not the save, when a tool returns something JSON can't hold.
    json.dumps(output, cls=DjangoJSONEncoder)
    return output


def _describe(error: Exception) -> str:
    from runs.tools import ToolError

    if isinstance(error, ToolError):
        return str(error)
    return f"{type(error).__name__}: {error}"
