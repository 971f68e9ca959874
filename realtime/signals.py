"""Model signals → events. Every receiver is a few lines; the work is in realtime.events.log.

Connected in RealtimeConfig.ready() with dispatch_uids. ``post_init`` notes the
status an instance was loaded with, ``post_save`` emits one event when the
status it saves differs (a save that changes nothing observable emits nothing).
A starting Celery worker process opens its publishing connection at once, and
every worker process (main and pool children) runs its observability reporter.
Around each task its database connections follow Django's per-request rule.
"""

from celery.signals import (
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from django.db import close_old_connections, transaction
from django.db.models.signals import post_delete, post_init, post_save

from observability import record, reporter
from realtime.events import log, publisher
from realtime.runlist import list_feed
from runs.models import Run, Step

_LOADED = "_realtime_loaded_status"
_LOADED_ATTEMPTS = "_realtime_loaded_attempts"


def remember_status(sender, instance, **kwargs) -> None:
    instance.__dict__[_LOADED] = instance.__dict__.get("status")


def remember_step_state(sender, instance, **kwargs) -> None:
    remember_status(sender, instance)
    instance.__dict__[_LOADED_ATTEMPTS] = instance.__dict__.get("attempts")


def _status_changed(instance, created: bool, update_fields) -> bool:
    if update_fields is not None and "status" not in update_fields:
        return False
    previous = None if created else instance.__dict__.get(_LOADED)
    instance.__dict__[_LOADED] = instance.status
    return previous != instance.status


def _attempt_added(instance: Step, created: bool, update_fields) -> bool:
    """A step saved with more attempts than it was loaded with: it is executed again."""
    if created or (update_fields is not None and "attempts" not in update_fields):
        return False
    previous = instance.__dict__.get(_LOADED_ATTEMPTS)
    instance.__dict__[_LOADED_ATTEMPTS] = instance.attempts
    return previous is not None and instance.attempts > previous


def run_saved(sender, instance: Run, created: bool, update_fields=None, raw=False, **kwargs) -> None:
    if raw:  # loaddata: the fixture brings its own log (and Run.seq) if it wants one
        instance.__dict__[_LOADED] = instance.status
        return
    if not created and _status_changed(instance, created, update_fields):
        if log.record_run_change(run=instance) is not None:
            list_feed.note_change(run_id=instance.pk)
    elif created:
        instance.__dict__[_LOADED] = instance.status
        list_feed.note_change(run_id=instance.pk)  # a new line in the run lists


def step_saved(sender, instance: Step, created: bool, update_fields=None, raw=False, **kwargs) -> None:
    if raw:
        instance.__dict__[_LOADED] = instance.status
        return
    if _status_changed(instance, created, update_fields):
        event = log.record_step_change(step=instance)
    elif _attempt_added(instance, created, update_fields):
        event = log.record_step_retry(step=instance)
    else:
        event = None
    if event is not None:
        list_feed.note_change(run_id=instance.run_id)


def run_deleted(sender, instance: Run, **kwargs) -> None:
    run_id, owner_id = instance.pk, instance.owner_id
    transaction.on_commit(
        lambda: publisher.publish_run_deleted(run_id=run_id, owner_id=owner_id), robust=True
    )


def worker_process_started(**kwargs) -> None:
    publisher.connect_publisher()
    reporter.start("worker-child")


def worker_started(sender=None, **kwargs) -> None:
    name = getattr(sender, "hostname", None) or "worker"
    record.worker_started(name=name)
    reporter.start("worker", name=name)


def worker_process_stopping(**kwargs) -> None:
    reporter.stop()


def task_boundary(sender=None, **kwargs) -> None:
    """Before and after each task, what Django does around a request: a connection past
    CONN_MAX_AGE, or broken by an error, is closed; the others are health-checked at their
    next use. (Celery's own closing of every connection is off: settings.CELERY_DB_REUSE_MAX.)"""
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return  # run in the caller's process (a test, a shell): its connections are the caller's
    close_old_connections()


def connect() -> None:
    post_init.connect(remember_status, sender=Run, dispatch_uid="realtime.run.post_init")
    post_init.connect(remember_step_state, sender=Step, dispatch_uid="realtime.step.post_init")
    post_save.connect(run_saved, sender=Run, dispatch_uid="realtime.run.post_save")
    post_save.connect(step_saved, sender=Step, dispatch_uid="realtime.step.post_save")
    post_delete.connect(run_deleted, sender=Run, dispatch_uid="realtime.run.post_delete")
    worker_process_init.connect(worker_process_started, dispatch_uid="realtime.worker_process_init")
    worker_ready.connect(worker_started, dispatch_uid="realtime.worker_ready")
    worker_process_shutdown.connect(worker_process_stopping, dispatch_uid="realtime.worker_process_shutdown")
    task_prerun.connect(task_boundary, dispatch_uid="realtime.task_prerun")
    task_postrun.connect(task_boundary, dispatch_uid="realtime.task_postrun")
    worker_shutdown.connect(worker_process_stopping, dispatch_uid="realtime.worker_shutdown")
