"""The user-level stream /ws/runs/: summaries of every run the user may see (staff: all).

One socket per list page, whatever the number of runs on it. After the
handshake the consumer joins the user's group (and staff's), then reads the
newest runs' summaries and sends them in ``connected``; after that each
``run_summary`` the publisher sends after a run-level or step change
(realtime.list_feed) is relayed. Joining before reading means a
change committed while connecting is either in the snapshot or relayed; the
consumer (and the client) keep per run the highest seq, so a run's line never
goes back. A reconnect gets a fresh snapshot, so nothing is missed across it.
A summary lost in transit, and every change in poll mode (where nothing is
published), comes with the process's run-list poller (realtime.list_poller):
one read per tick for all list sockets, every REALTIME_LIST_REFRESH_INTERVAL
(REALTIME_POLL_INTERVAL in poll mode or degraded).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from observability import record
from realtime.consumers.socket import ProtocolSocket
from realtime.events.publisher import DELETED_MESSAGE_TYPE, SUMMARY_MESSAGE_TYPE
from realtime.failover import get_probe
from realtime.list_poller import get_list_poller
from realtime.protocol import frames
from realtime.protocol.close_codes import CLOSE_UNAUTHENTICATED
from realtime.reads import selectors, summaries, threads

logger = logging.getLogger(__name__)

# A deleted run's "highest seq sent": above any seq, so no late summary brings its line back.
DELETED = 2**63


class RunListConsumer(ProtocolSocket):
    """Streams the summaries of a user's runs to one list page.

    Like a run's socket (realtime.consumers.socket.ProtocolSocket): its
    credentials are checked again every REALTIME_ACCESS_RECHECK_SECONDS (4401),
    a client that stops reading is resynced with a fresh ``connected`` instead of
    buffering without bound, and a channel layer that is down (at the
    handshake, or later) does not fail it: the process's layer probe
    (realtime.failover) degrades it to the run-list poller's re-read every
    REALTIME_POLL_INTERVAL and brings it back once the layer is.
    """

    observed: record.Connection | None = None  # this socket in the logs and metrics

    run_id = None  # the probe's watchers name their run; this one watches a user's

    def init_state(self) -> None:
        self.seen: dict[str, int] = {}  # run id → the highest seq sent for it
        self.groups: list[str] = []
        self.subscribed = False  # a member of its groups on the layer
        self.degraded = False  # re-read every REALTIME_POLL_INTERVAL until the layer is back
        self.registered = False  # with the process's layer probe
        self.polled = False  # by the process's run-list poller
        self.tasks: list[asyncio.Task] = []
        self.layer_reader: asyncio.Task | None = None
        # Until a `connected` frame is sent, a summary from the layer is dropped (the snapshot
        # being read has it, or the run-list poller's next read, which starts before that
        # read, brings it) and a deletion is held: no frame may come before `connected`.
        self.resyncing = False
        self.deleted_while_resyncing: list[str] = []

    async def connect(self) -> None:
        await self.accept()
        self.observed = record.socket_opened(mode="list", run_id=None)
        user = self.scope.get("user")
        token_key = self.scope.get("auth_token")
        if token_key is not None:
            user = await threads.read(selectors.user_for_token, key=token_key)
        if user is None or not user.is_authenticated:
            await self._refuse(CLOSE_UNAUTHENTICATED, "not authenticated")
            return
        self.user = user
        self.user_id, self.sees_all = user.pk, user.is_staff  # the list poller's fan-out
        self.groups = [frames.user_group_name(user.pk)] + ([frames.STAFF_GROUP] if user.is_staff else [])
        get_probe().register(self, self.channel_layer)
        self.registered = True
        self.resyncing = True
        if not await self.resubscribe():
            self.degrade()
        read_at = timezone.now()
        await self._send_snapshot(resync=False)
        self._poll(since=read_at)
        self._watch_access(user=user, token_key=token_key)

    # --- The layer (called by this connection and by the process's layer probe) ---------

    async def resubscribe(self) -> bool:
        """Join (again) the user's groups through a channel of its own; False when the layer fails."""
        try:
            if self.channel_name is None:
                self.channel_name = await self.channel_layer.new_channel()
            for group in self.groups:
                await self.channel_layer.group_add(group, self.channel_name)
        except Exception as error:  # noqa: BLE001 - any layer failure means "re-read instead"
            # Debug: the layer probe reports an outage once for every watcher.
            logger.debug("joining the list groups failed: %s", error)
            self.subscribed = False
            return False
        self.subscribed = True
        if self.layer_reader is None or self.layer_reader.done():
            self.layer_reader = asyncio.create_task(self._read_layer())
        return True

    async def _read_layer(self) -> None:
        """Relay what the layer brings to this connection's channel, until it fails."""
        while not self.finished:
            try:
                message = await self.channel_layer.receive(self.channel_name)
            except Exception as error:  # noqa: BLE001 - any layer failure means "re-read instead"
                logger.debug("list stream's layer receive failed: %s", error)
                self.channel_name = None  # a fresh channel once the layer is back
                self.subscribed = False
                if not self.finished:
                    self.degrade()
                return
            if message.get("type") == SUMMARY_MESSAGE_TYPE:
                await self.run_summary(message)
            elif message.get("type") == DELETED_MESSAGE_TYPE:
                await self.run_deleted(message)

    def degrade(self) -> None:
        self.degraded = True
        if self.polled:
            self._poll()  # re-read at the poll interval from now on
        get_probe().suspect()

    async def recover(self) -> bool:
        if not await self.resubscribe():
            return False
        self.degraded = False
        if self.polled:
            # Its poll slot stays: what changed while the layer was down comes then.
            self._poll()
        return True

    # --- Reading ------------------------------------------------------------------------

    async def _read(self) -> list[dict]:
        runs = await threads.read(summaries.run_summaries_for_user, user=self.user)
        for summary in runs:
            self.seen[summary["id"]] = max(self.seen.get(summary["id"], -1), summary["seq"])
        return runs

    def _poll(self, *, since: datetime | None = None) -> None:
        """Have the process's run-list poller re-read this socket's runs at this socket's interval."""
        if self.degraded or settings.REALTIME_MODE == "poll":
            interval = settings.REALTIME_POLL_INTERVAL
        else:
            interval = settings.REALTIME_LIST_REFRESH_INTERVAL
        get_list_poller().watch(self, interval=interval, since=since)
        self.polled = True

    async def run_summary(self, message: dict) -> None:
        """A summary from the publisher: relay it unless this socket has that seq already."""
        await self.deliver_summary(message["run_id"], message["seq"], message["text"])

    async def run_deleted(self, message: dict) -> None:
        """A run was deleted: its line goes (`run_deleted`), and no later summary of it brings it back."""
        run_id = message["run_id"]
        if self.finished or self.seen.get(run_id) == DELETED:
            return
        self.seen[run_id] = DELETED
        if self.resyncing:
            self.deleted_while_resyncing.append(run_id)
            return
        await self._send_deleted(run_id)

    async def _send_deleted(self, run_id: str) -> None:
        frame = frames.build_frame(
            type=frames.RUN_DELETED, run_id=run_id, seq=0, ts=timezone.now(), payload={}
        )
        await self.send(text_data=frames.encode_frame(frame))

    async def deliver_summary(self, run_id: str, seq: int, text: str) -> None:
        """A run's line, from the publisher or the list poller: sent unless this socket has that seq."""
        if self.finished or self.resyncing or seq <= self.seen.get(run_id, -1):
            return
        if self._client_behind():
            # Its unread frames fill the bound: drop this and what follows, and
            # resync it with a fresh snapshot once it has drained.
            self.resyncing = True
            self.tasks.append(asyncio.create_task(self._resync_when_drained()))
            return
        self.seen[run_id] = seq
        await self.send(text_data=text)

    async def _resync_when_drained(self) -> None:
        await self._wait_until_drained()
        if self.finished:
            return
        await self._send_snapshot(resync=True)

    async def _send_snapshot(self, *, resync: bool) -> None:
        """Read this user's runs and send them as `connected`; then what the wait held back."""
        runs = await self._read()
        payload = {"mode": settings.REALTIME_MODE, "runs": runs}
        await self._send_frame("connected", {**payload, "resync": True} if resync else payload)
        self.resyncing = False
        held, self.deleted_while_resyncing = self.deleted_while_resyncing, []
        for run_id in held:
            await self._send_deleted(run_id)

    def layer_names(self) -> tuple[list[str], str | None]:
        """The user's (and staff's) groups, received on this socket's own channel."""
        return list(self.groups), self.channel_name

    async def disconnect(self, code: int) -> None:
        record.socket_closed(self.observed, code)

    async def stop(self) -> None:
        record.socket_closed(self.observed, None)  # no-op after disconnect(); else ended unclosed
        for task in [*self.tasks, self.layer_reader]:
            if task is not None:
                task.cancel()
        if self.registered:
            self.registered = False
            get_probe().unregister(self)
        if self.polled:
            self.polled = False
            get_list_poller().unwatch(self)
        if self.subscribed:
            self.subscribed = False
            for group in self.groups:
                try:
                    await self.channel_layer.group_discard(group, self.channel_name)
                except Exception as error:  # noqa: BLE001 - the layer may be down; memberships expire
                    logger.debug("leaving %s failed: %s", group, error)

    async def _error(self, code: str, message: str) -> None:
        await self._send_frame("error", {"code": code, "message": message})

    async def _pong(self) -> None:
        await self._send_frame("pong", {})

    async def _send_frame(self, type: str, payload: dict) -> None:
        frame = frames.build_frame(type=type, run_id="", seq=0, ts=timezone.now(), payload=payload)
        await self.send(text_data=frames.encode_frame(frame))
