"""The user-level stream /ws/runs/: summaries of every run the user may see (staff: all).

One socket per list page, whatever the number of runs on it. After the
handshake the consumer joins the user's group (and staff's), then reads the
newest runs' summaries and sends them in ``connected``; after that each
``run_summary`` the publisher sends after a run-level or step change
(realtime.runlist.list_feed) is relayed. Joining before reading means a
change committed while connecting is either in the snapshot or relayed; the
consumer (and the client) keep per run the highest seq, so a run's line never
goes back. A reconnect gets a fresh snapshot, so nothing is missed across it.
A summary lost in transit, and every change in poll mode (where nothing is
published), comes with the process's run-list poller (realtime.runlist.list_poller):
one read per tick for all list sockets, every REALTIME_LIST_REFRESH_INTERVAL
(REALTIME_POLL_INTERVAL in poll mode or degraded).

The connection's state is its ``ListStream``: the same machine as a run's
(realtime.sockets.stream), with the same transitions and the same one
place that ends it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from observability import record
from realtime.delivery import front_door
from realtime.events.publisher import DELETED_MESSAGE_TYPE, SUMMARY_MESSAGE_TYPE
from realtime.protocol import frames
from realtime.protocol.close_codes import CLOSE_UNAUTHENTICATED
from realtime.reads import selectors, summaries, threads
from realtime.runlist.list_poller import get_list_poller
from realtime.sockets.socket import ProtocolSocket
from realtime.sockets.stream import FOLLOWING, Policy, Stream

logger = logging.getLogger(__name__)

# A deleted run's "highest seq sent": above any seq, so no late summary brings its line back.
DELETED = 2**63


def list_policy(mode: str) -> Policy:
    """A run list listens to the layer for summaries and deletions, and re-reads its runs every
    REALTIME_LIST_REFRESH_INTERVAL (in poll mode, where nothing is published: REALTIME_POLL_INTERVAL)."""
    if mode == "poll":
        return Policy(mode=mode, push=True, live_poll_interval=settings.REALTIME_POLL_INTERVAL)
    return Policy(mode=mode, push=True, live_poll_interval=settings.REALTIME_LIST_REFRESH_INTERVAL)


class ListStream(Stream):
    """The summaries of a user's runs to one list page.

    Like a run's stream: its credentials are checked again every
    REALTIME_ACCESS_RECHECK_SECONDS (4401), a client that stops reading is
    resynced with a fresh ``connected`` instead of buffering without bound, and
    a channel layer that is down (at the handshake, or later) does not fail it:
    the process's layer probe (realtime.delivery.failover) degrades it to the run-list
    poller's re-read every REALTIME_POLL_INTERVAL and brings it back once the layer is.
    """

    run_id = None  # the probe's streams name their run; this one watches a user's

    def __init__(self, socket: RunListConsumer, *, policy: Policy) -> None:
        super().__init__(socket, policy=policy)
        self.seen: dict[str, int] = {}  # run id → the highest seq sent for it
        self.groups: list[str] = []
        self.channel_name: str | None = None  # its own channel on the layer
        self.subscribed = False  # a member of its groups on the layer
        self.layer_reader: asyncio.Task | None = None
        # Until a `connected` frame is sent (connecting, resyncing), a summary from the layer
        # is dropped (the snapshot being read has it, or the run-list poller's next read,
        # which starts before that read, brings it) and a deletion is held: no frame may
        # come before `connected`.
        self.deleted_while_resyncing: list[str] = []
        self._since: datetime | None = None  # when its first snapshot was read

    @property
    def layer(self):
        return self.socket.channel_layer

    async def open(self, *, user, token_key: str | None) -> None:
        self.user = user
        self.user_id, self.sees_all = user.pk, user.is_staff  # the list poller's fan-out
        self.groups = [frames.user_group_name(user.pk)] + ([frames.STAFF_GROUP] if user.is_staff else [])
        front_door.watch_layer(self, self.layer)
        if not await self.resubscribe():
            self.on_layer_down()
        self._since = timezone.now()
        await self._send_snapshot(resync=False)
        if self.closed:
            return
        self.went_live()
        await self._flush_held()
        front_door.watch_access(
            self, user=user, token_key=token_key, session=self.socket.scope.get("session")
        )

    # --- The layer (this stream, and the process's layer probe) ---------------------------

    async def resubscribe(self) -> bool:
        """Join (again) the user's groups through a channel of its own; False when the layer fails."""
        try:
            if self.channel_name is None:
                self.channel_name = await self.layer.new_channel()
            for group in self.groups:
                await self.layer.group_add(group, self.channel_name)
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
        """Relay what the layer brings to this stream's channel, until it fails."""
        while not self.closed:
            try:
                message = await self.layer.receive(self.channel_name)
            except Exception as error:  # noqa: BLE001 - any layer failure means "re-read instead"
                logger.debug("list stream's layer receive failed: %s", error)
                self.channel_name = None  # a fresh channel once the layer is back
                self.subscribed = False
                self.on_layer_down()
                return
            if message.get("type") == SUMMARY_MESSAGE_TYPE:
                await self.on_event(message["run_id"], message["seq"], message["text"])
            elif message.get("type") == DELETED_MESSAGE_TYPE:
                await self.on_deleted(message["run_id"])

    def layer_names(self) -> tuple[list[str], str | None]:
        """The user's (and staff's) groups, received on this stream's own channel."""
        return list(self.groups), self.channel_name

    def _sync_poll(self) -> None:
        """Have the process's run-list poller re-read this stream's runs at its interval."""
        if self.following and not self.closed:
            interval = self.policy.poll_interval(layer_down=self.layer_down)
            get_list_poller().watch(self, interval=interval, since=self._since)

    # --- Summaries (the layer, the run-list poller) ----------------------------------------

    async def on_event(self, run_id: str, seq: int, text: str) -> None:
        """A run's line, from the publisher or the list poller: sent unless this stream has that seq."""
        if self.state not in FOLLOWING or seq <= self.seen.get(run_id, -1):
            return
        if self.socket.client_behind():
            # Its unread frames fill the bound: drop this and what follows, and
            # resync it with a fresh snapshot once it has drained.
            self.fell_behind()
            return
        self.seen[run_id] = seq
        await self.socket.send(text_data=text)

    async def on_deleted(self, run_id: str) -> None:
        """A run was deleted: its line goes (`run_deleted`), and no later summary of it brings it back."""
        if self.closed or self.seen.get(run_id) == DELETED:
            return
        self.seen[run_id] = DELETED
        if self.state not in FOLLOWING:  # no frame before `connected`
            self.deleted_while_resyncing.append(run_id)
            return
        await self._send_deleted(run_id)

    async def on_revoked(self) -> None:
        """The access watch found the credentials this socket opened with gone: close 4401."""
        if not self.closed:
            await self.close(CLOSE_UNAUTHENTICATED, error="the credentials were revoked")

    async def _send_deleted(self, run_id: str) -> None:
        frame = frames.build_frame(
            type=frames.RUN_DELETED, run_id=run_id, seq=0, ts=timezone.now(), payload={}
        )
        await self.socket.send(text_data=frames.encode_frame(frame))

    async def _resync_when_drained(self) -> None:
        await self.socket.wait_until_drained()
        if self.closed:
            return
        await self._send_snapshot(resync=True)
        if self.closed:
            return
        self.resynced()
        await self._flush_held()

    async def _read(self) -> list[dict]:
        runs = await threads.read(summaries.run_summaries_for_user, user=self.user)
        for summary in runs:
            self.seen[summary["id"]] = max(self.seen.get(summary["id"], -1), summary["seq"])
        return runs

    async def _send_snapshot(self, *, resync: bool) -> None:
        """Read this user's runs and send them as `connected`."""
        runs = await self._read()
        payload = {"mode": self.mode, "runs": runs}
        await self.socket.send_frame("connected", {**payload, "resync": True} if resync else payload)

    async def _flush_held(self) -> None:
        """The deletions held back while `connected` was on its way."""
        held, self.deleted_while_resyncing = self.deleted_while_resyncing, []
        for run_id in held:
            await self._send_deleted(run_id)

    # --- Ending ------------------------------------------------------------------------------

    async def release(self) -> None:
        """Out of the process's probe, run-list poller and access watch; off the layer."""
        for task in (self.resync, self.layer_reader):
            if task is not None:
                task.cancel()
        front_door.forget(self)
        get_list_poller().unwatch(self)
        if self.subscribed:
            self.subscribed = False
            for group in self.groups:
                try:
                    await self.layer.group_discard(group, self.channel_name)
                except Exception as error:  # noqa: BLE001 - the layer may be down; memberships expire
                    logger.debug("leaving %s failed: %s", group, error)


class RunListConsumer(ProtocolSocket):
    """The socket of /ws/runs/; its state is its ``ListStream``."""

    stream: ListStream

    def init_state(self) -> None:
        self.stream = ListStream(self, policy=list_policy(settings.REALTIME_MODE))

    async def connect(self) -> None:
        await self.accept()
        self.stream.observed = record.socket_opened(mode="list", run_id=None)
        user = self.scope.get("user")
        token_key = self.scope.get("auth_token")
        if token_key is not None:
            user = await threads.read(selectors.user_for_token, key=token_key)
        if user is None or not user.is_authenticated:
            await self._refuse(CLOSE_UNAUTHENTICATED, "not authenticated")
            return
        await self.stream.open(user=user, token_key=token_key)

    async def disconnect(self, code: int) -> None:
        record.socket_closed(self.stream.observed, code)
        await self.stream.close()

    async def stop(self) -> None:
        record.socket_closed(self.stream.observed, None)  # no-op after disconnect(); else ended unclosed
        await self.stream.close()

    async def _error(self, code: str, message: str) -> None:
        await self.send_frame("error", {"code": code, "message": message})

    async def _pong(self) -> None:
        await self.send_frame("pong", {})

    async def send_frame(self, type: str, payload: dict) -> None:
        frame = frames.build_frame(type=type, run_id="", seq=0, ts=timezone.now(), payload=payload)
        await self.send(text_data=frames.encode_frame(frame))
