"""Runs and their steps. State changes only through runs.services."""

import uuid

from django.conf import settings
from django.db import models


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


RUN_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
STEP_TERMINAL = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED})


class Run(models.Model):
    """One execution of a plan: an ordered list of tool calls."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="runs")
    prompt = models.TextField(blank=True, default="")
    plan = models.JSONField(help_text="The step specs as submitted: [{tool, args}, ...].")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    # When the run was handed to the executor (the broker). A queued run without
    # it waits for its owner's runs in flight to drop below RUNS_MAX_INFLIGHT_PER_USER
    # (runs.services: fair execution), so one user's backlog never fills the queue.
    dispatched_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The run's event counter: the seq of its latest event in realtime's log.
    # Written only by realtime.events.log under this row's lock.
    seq = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="run_owner_created"),
            models.Index(fields=["status", "updated_at"], name="run_status_updated"),
        ]

    def __str__(self) -> str:
        return f"Run {self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in RUN_TERMINAL


class Step(models.Model):
    """One tool call of a run, created when the run reaches it."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveIntegerField()
    tool = models.CharField(max_length=100)
    args = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # 1 when first started; an executor that takes over a run whose executor was
    # lost mid-step executes the step again and adds one (steps are at-least-once).
    attempts = models.PositiveIntegerField(default=1)
    # The process executing the step's current attempt (a Celery worker's hostname,
    # or the web process in embedded mode): set again with each attempt.
    worker = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="step_unique_index")]

    def __str__(self) -> str:
        return f"Step {self.index} {self.tool} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in STEP_TERMINAL
