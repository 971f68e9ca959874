"""A run whose enqueue failed is enqueued again in the background, with backoff.

When the broker refuses a send (unreachable for a moment, a connection reset)
the run is committed as ``queued`` with no message anywhere. If the broker kept
its data, the take-over sweep cannot tell that run from one waiting its turn
(that would need reading the queue), and the reaper would dispatch it only
after RUNS_STALE_AFTER_SECONDS. So the process that failed to send keeps the
run and sends it again, first after RUNS_DISPATCH_RETRY_DELAY, doubling up to
RUNS_DISPATCH_RETRY_MAX_DELAY, until a send succeeds or RUNS_STALE_AFTER_SECONDS
have passed (then the reaper's). At most one pending retry per run, and a
retry happens only after a failed send: nothing piles up on a busy queue. If
this process dies meanwhile, the reaper is still there.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    options: dict
    due: float
    delay: float
    give_up_at: float


class DispatchRetrier:
    """Sends again, on a daemon thread of its own, the runs whose send failed."""

    def __init__(
        self,
        send: Callable[..., None],
        *,
        first_delay: float,
        max_delay: float,
        give_up_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.send = send  # raises when the broker refuses
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.give_up_after = give_up_after
        self.clock = clock
        self.pending: dict[uuid.UUID, _Pending] = {}
        self.changed = threading.Condition()
        self.thread: threading.Thread | None = None

    def add(self, run_id: uuid.UUID, options: dict) -> None:
        """Send ``run_id`` again later (once, however often its send failed meanwhile)."""
        now = self.clock()
        with self.changed:
            if run_id not in self.pending:
                self.pending[run_id] = _Pending(
                    options=options,
                    due=now + self.first_delay,
                    delay=self.first_delay,
                    give_up_at=now + self.give_up_after,
                )
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name="dispatch-retry", daemon=True)
                self.thread.start()
            self.changed.notify()

    def _loop(self) -> None:
        while True:
            with self.changed:
                if not self.pending:
                    self.thread = None
                    return
                run_id, entry = min(self.pending.items(), key=lambda item: item[1].due)
                wait = entry.due - self.clock()
                if wait > 0:
                    self.changed.wait(wait)
                    continue
                del self.pending[run_id]
            self._try(run_id, entry)

    def _try(self, run_id: uuid.UUID, entry: _Pending) -> None:
        try:
            self.send(run_id, **entry.options)
        except Exception as error:  # noqa: BLE001 - the broker is still away: later, or the reaper's
            now = self.clock()
            if now >= entry.give_up_at:
                logger.warning("gave up enqueueing run %s again (%s); the reaper will", run_id, error)
                return
            entry.delay = min(entry.delay * 2, self.max_delay)
            entry.due = now + entry.delay
            with self.changed:
                self.pending.setdefault(run_id, entry)
            return
        logger.info("run %s enqueued on retry", run_id)
