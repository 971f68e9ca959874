"""The process's access watch: every open socket's credentials re-checked in one read per period.

Channels checks a socket's credentials at the handshake only; a token deleted,
a user deactivated or a session ended meanwhile must not keep a socket that
streams a long run's every event, or every change of the user's runs. One
``AccessWatch`` per event loop (a Daphne process runs one) holds the
credentials each socket of the process was let in with, on both endpoints
(/ws/runs/<id>/ and /ws/runs/). Every REALTIME_ACCESS_RECHECK_SECONDS it asks
the database, in ONE read (selectors.revoked_credentials), which of them no
longer hold, and tells each socket whose credentials are among those through
its stream's ``on_revoked`` (the stream closes itself with 4401). A
credential revoked at any moment is seen by the next tick, at most one period
later, whenever its socket connected.

A task per socket, each with its own query, was one query per socket per
period while nothing happened — the per-connection polling this product
replaces — and a sleeping task's memory per socket (docs/benchmarks.md). Here
a period costs one read per process, growing with the distinct credentials,
not with the sockets. The watch runs only while a socket is watched; its
clock starts with the first one, so a process without sockets asks nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings

from realtime.delivery import per_loop
from realtime.reads import selectors, threads

logger = logging.getLogger(__name__)


class Holder(Protocol):
    """What the watch needs of a socket's stream (realtime.sockets.stream.Stream)."""

    async def on_revoked(self) -> None:
        """Close with 4401 unless already closing; must not raise."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a socket was let in with: a token's key, or a user (with a browser's session)."""

    token_key: str | None = None
    user_id: int | None = None
    session_key: str | None = None

    @classmethod
    def of(cls, *, user, token_key: str | None, session) -> Credentials:
        """A token client's key; otherwise its user and, for a browser, the session it came with."""
        if token_key is not None:
            return cls(token_key=token_key)
        return cls(user_id=getattr(user, "pk", None), session_key=getattr(session, "session_key", None))

    def revoked_in(self, revoked: selectors.Revoked) -> bool:
        if self.token_key is not None:
            return self.token_key in revoked.token_keys  # covers the token's user turning inactive
        if self.user_id is None:
            return True  # nothing left that lets it in
        return self.user_id in revoked.user_ids or self.session_key in revoked.session_keys


class AccessWatch(per_loop.Ticker):
    """Re-checks the credentials of all of one event loop's sockets, one read per period."""

    task_name = "realtime-access-watch"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.sockets: dict[Holder, Credentials] = {}
        self._due = 0.0

    def watch(self, socket: Holder, credentials: Credentials) -> None:
        """Re-check ``credentials`` every period until ``socket`` is unwatched or told they are gone."""
        self.sockets[socket] = credentials
        if not self.running:
            # On a grid from the first socket; a late tick does not push the next ones back.
            self._due = self.loop.time() + settings.REALTIME_ACCESS_RECHECK_SECONDS
            self.start()

    def unwatch(self, socket: Holder) -> None:
        """Forget ``socket`` (it is closing). Idempotent."""
        if self.sockets.pop(socket, None) is not None and not self.sockets:
            self._wake.set()  # the last one: stop now, not at the next tick

    def next_due(self) -> float | None:
        return self._due if self.sockets else None

    async def tick(self) -> None:
        """One read for the credentials of every watched socket; each socket whose are gone is told."""
        self._due = max(self._due + settings.REALTIME_ACCESS_RECHECK_SECONDS, self.loop.time())
        watched = dict(self.sockets)
        if not watched:
            return
        by_user = [c for c in watched.values() if c.token_key is None]
        try:
            revoked = await threads.read(
                selectors.revoked_credentials,
                token_keys={c.token_key for c in watched.values() if c.token_key is not None},
                user_ids={c.user_id for c in by_user if c.user_id is not None},
                session_keys={c.session_key for c in by_user if c.session_key is not None},
            )
        except Exception as error:  # noqa: BLE001 - the database is away: the next tick asks again
            warning = (
                f"could not re-check the credentials of {len(watched)} sockets"
                f" (again every {settings.REALTIME_ACCESS_RECHECK_SECONDS:g} s until it works): %s"
            )
            self.read_failed(logger, "re-checking the sockets' credentials", error, warning=warning)
            return
        self.read_worked(logger, "the sockets' credentials are re-checked again")
        gone = [socket for socket, credentials in watched.items() if credentials.revoked_in(revoked)]
        for socket in gone:
            self.unwatch(socket)
        if gone:
            await asyncio.gather(*(_tell(socket) for socket in gone))


async def _tell(socket: Holder) -> None:
    try:
        await socket.on_revoked()
    except Exception:
        # One broken socket must not keep the others open.
        logger.warning("closing a socket whose credentials were revoked failed", exc_info=True)


_watches: per_loop.Instances[asyncio.AbstractEventLoop, AccessWatch] = per_loop.Instances()


def get_access_watch() -> AccessWatch:
    """The access watch of the running event loop (one per server process)."""
    return per_loop.of_running_loop(_watches, AccessWatch)
