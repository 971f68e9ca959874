"""Embedded mode: runs executed inside the web process (no broker, no worker).

The in-memory channel layer is not thread-safe and lives on the server's event
loop, so an event a run produces must be sent on that loop. A run therefore
executes as a task *of the server loop*: ``sync_to_async(thread_sensitive=
False)`` moves the blocking work to a thread of a small pool, and inside that
thread ``async_to_sync`` (which realtime.events.publisher uses to publish) hands each
publish back to the server loop instead of starting a loop of its own.

``ServerLoopMiddleware`` (wrapped around the ASGI application) remembers the
loop the first time it serves anything; a run submitted before that, or in a
process with no server (a management command), runs on a plain thread and its
events reach clients through the log (resume, gap fill, polling) only. On
binding it also resumes the runs a previous process left queued or processing
(leases are process-local here: one `make run` per SQLite file), and starts the
in-process reaper.

The pool's threads are daemons: stopping the server must not wait for (or hang
on) a run that is mid-step — that run resumes at the next start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import socket
import threading
import uuid
from concurrent.futures import Executor, Future

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

logger = logging.getLogger(__name__)


class DaemonThreadPool(Executor):
    """A fixed pool of daemon threads.

    ThreadPoolExecutor joins its threads at interpreter exit, so a run still
    executing (or blocked handing an event to the stopped server loop) would
    keep a stopped server alive.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._workers = workers
        self._name = name
        self._threads: list[threading.Thread] = []
        self._guard = threading.Lock()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        self._work.put((future, fn, args, kwargs))
        with self._guard:
            while len(self._threads) < self._workers:
                name = f"{self._name}-{len(self._threads)}"
                thread = threading.Thread(target=self._work_forever, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)
        return future

    def _work_forever(self) -> None:
        while True:
            future, fn, args, kwargs = self._work.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                future.set_exception(error)
            else:
                future.set_result(result)


_pool = DaemonThreadPool(settings.RUNS_INLINE_WORKERS, "run")
_server_loop: asyncio.AbstractEventLoop | None = None
_pending: set[Future] = set()
_pending_guard = threading.Lock()


def submit(run_id: uuid.UUID) -> Future:
    """Execute the run in this process, as a task of the server loop when there is one."""
    loop = _server_loop
    if loop is None or not loop.is_running():
        logger.info("no server loop in this process; run %s executes on a plain thread", run_id)
        return _track(_pool.submit(_execute, run_id))
    return _track(asyncio.run_coroutine_threadsafe(_execute_on_loop(run_id), loop))


def enqueue_run(run_id: uuid.UUID, *, expires: float | None = None) -> None:
    """runs.dispatch's way in. ``expires`` is for queued messages; a run handed to
    this process starts at once, so there is nothing to expire."""
    submit(run_id)


async def _execute_on_loop(run_id: uuid.UUID) -> None:
    await sync_to_async(_execute, thread_sensitive=False, executor=_pool)(run_id)


def _execute(run_id: uuid.UUID) -> None:
    from runs.executor import execute_run

    close_old_connections()
    try:
        execute_run(run_id=run_id, worker=worker_name())
    except Exception:
        logger.exception("run %s crashed in embedded mode", run_id)
    finally:
        close_old_connections()


def worker_name() -> str:
    """What a step executed here records as its worker: this web process."""
    return f"web:{socket.gethostname()}:{os.getpid()}"


def _track(future: Future) -> Future:
    # Keep a reference until it is done: a dropped task may be garbage-collected mid-run.
    with _pending_guard:
        _pending.add(future)
    future.add_done_callback(_forget)
    return future


def _forget(future: Future) -> None:
    with _pending_guard:
        _pending.discard(future)


def bind_server_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Remember the server's event loop; True the first time (a new loop)."""
    global _server_loop
    if _server_loop is loop:
        return False
    _server_loop = loop
    return True


def resume_interrupted() -> list[uuid.UUID]:
    """Execute the runs a previous process left queued or processing (they resume)."""
    from runs import selectors

    try:
        now = timezone.now()
        run_ids = [
            *selectors.runs_processing_without_progress(since=now),
            *selectors.runs_queued_without_progress(since=now),
        ]
    finally:
        close_old_connections()
    for run_id in run_ids:
        logger.info("resuming run %s, interrupted by the last stop", run_id)
        submit(run_id)
    return run_ids


async def _reap_periodically(interval: float) -> None:
    """Embedded mode has no Celery beat: the reaper runs on the server loop."""
    from runs.reaper import reap_stuck_runs

    while True:
        await asyncio.sleep(interval)
        try:
            await sync_to_async(_reap, thread_sensitive=False, executor=_pool)(reap_stuck_runs)
        except Exception:
            logger.exception("the embedded reaper failed; it tries again in %gs", interval)


def _reap(reap_stuck_runs) -> None:
    try:
        reap_stuck_runs()
    finally:
        close_old_connections()


class ServerLoopMiddleware:
    """ASGI middleware: binds the serving loop for embedded runs, starts the reaper."""

    def __init__(self, app):
        self.app = app
        self._resume: asyncio.Task | None = None
        self._reaper: asyncio.Task | None = None

    async def __call__(self, scope, receive, send):
        loop = asyncio.get_running_loop()
        if bind_server_loop(loop):
            logger.info("embedded executor bound to the server loop")
            self._resume = loop.create_task(sync_to_async(resume_interrupted, thread_sensitive=False)())
            self._reaper = loop.create_task(_reap_periodically(settings.RUNS_REAP_INTERVAL_SECONDS))
        return await self.app(scope, receive, send)
