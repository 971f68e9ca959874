"""The process-wide services of a web process: one instance per event loop, ticking while needed.

A Daphne process runs one event loop, and its sockets share one hub
(realtime/delivery/hub.py), one poller (realtime/delivery/poller.py), one run-list poller
(realtime/runlist/list_poller.py), one access watch (realtime/delivery/access_watch.py) and
one layer probe (realtime/delivery/failover.py). Each is made on first use in the
running loop and kept only as long as that loop lives (tests run a loop per
test; a closed loop's instance must not serve the next one).

The pollers and the access watch are ``Ticker``s: a task that makes one read
for all of the process's sockets whenever the earliest of them is due, and
that runs only while there is something to watch — a process without sockets
asks the database nothing.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

Instances = weakref.WeakKeyDictionary  # event loop → its instance


def of_running_loop(instances: Instances, make: Callable[[asyncio.AbstractEventLoop], T]) -> T:
    """The running event loop's instance in ``instances``, made with ``make(loop)`` on first use."""
    loop = asyncio.get_running_loop()
    instance = instances.get(loop)
    if instance is None:
        instance = instances[loop] = make(loop)
    return instance


class Ticker:
    """Calls ``tick`` whenever ``next_due`` (the loop's time) has come, until it answers None."""

    task_name = "realtime-ticker"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._failing = False  # the last read failed (warned once until one works again)

    @property
    def running(self) -> bool:
        return self._task is not None

    def next_due(self) -> float | None:
        """When the next tick is due; None when nothing is watched (the task ends)."""
        raise NotImplementedError

    async def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Something was watched, or its due time changed: look again now (start the task if none)."""
        self._wake.set()
        if self._task is None:
            self._task = self.loop.create_task(self._run(), name=self.task_name)

    async def _run(self) -> None:
        try:
            while (due := self.next_due()) is not None:
                delay = due - self.loop.time()
                if delay > 0:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=delay)
                    except TimeoutError:
                        pass
                    continue
                await self.tick()
        finally:
            # Synchronous from the last emptiness check: a start() arriving
            # after this sees no task and starts a new one.
            self._task = None

    def read_failed(self, logger: logging.Logger, what: str, error: Exception, *, warning: str) -> None:
        """A read failed: ``warning`` (its %s: the error) the first time, then debug until one works."""
        if self._failing:
            logger.debug("%s failed again: %s", what, error)
            return
        self._failing = True
        logger.warning(warning, error)

    def read_worked(self, logger: logging.Logger, back: str) -> None:
        """A tick's read worked: say ``back`` if the one before had failed."""
        if self._failing:
            self._failing = False
            logger.info(back)
