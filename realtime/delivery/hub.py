"""One channel-layer subscription per run per server process (push and hybrid modes).

Channels' own way gives every WebSocket its own layer channel and its own group
membership: with the pub/sub layer a Redis SUBSCRIBE per connection, and per
event one queue put, one task wake-up and one message decode per watcher — the
per-frame cost the fan-out benchmark measured. Here each process (event loop)
opens one channel, joins each watched run's group once, receives each event
once, and hands it to that run's local streams through their ``on_event``
(which sends each seq once and in order, filling gaps from the log). Streams
join and leave through realtime.delivery.front_door.

A stream joins before it reads its snapshot: an event that commits
meanwhile is both in the snapshot and delivered, and ``on_event`` drops the copy.
Joins and leaves of one run are serialised here, so a run's group is never
left while a watcher of this process still needs it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from channels.layers import BaseChannelLayer
from django.conf import settings

from realtime.delivery import per_loop
from realtime.events import shards
from realtime.events.publisher import DELETED_MESSAGE_TYPE

logger = logging.getLogger(__name__)


class Member(Protocol):
    """What the hub needs of a stream (realtime.sockets.run.RunStream)."""

    @property
    def closed(self) -> bool: ...

    def delivers_without_waiting(self, seq: int) -> bool:
        """Whether ``on_event(seq)`` would send at once (not busy, no gap to fill first)."""

    async def on_event(self, seq: int, text: str, *, final: bool) -> None: ...

    async def on_deleted(self) -> None: ...

    def on_layer_down(self, error: Exception | None = None) -> None:
        """The layer failed it: poll until the layer is back."""


class RunHub:
    """The run subscriptions of one event loop, on one channel layer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, layer: BaseChannelLayer) -> None:
        self.loop = loop
        self.layer = layer
        self.channel: str | None = None
        self.watchers: dict[str, set[Member]] = {}  # group → watchers of this process
        self._joined: set[str] = set()  # groups this process's channel is in
        self._joining: dict[str, asyncio.Future] = {}
        self._leaving: dict[str, asyncio.Future] = {}
        self._task: asyncio.Task | None = None
        self._parked = False  # the task waits in layer.receive (safe to cancel)
        self._opening: asyncio.Future | None = None
        self._deliveries: set[asyncio.Task] = set()

    # --- membership ------------------------------------------------------------------

    async def join(self, consumer: Member, group: str, *, refresh: bool = False) -> None:
        """Make ``consumer`` receive ``group``'s events. Raises when the layer fails.

        ``refresh`` re-adds the membership even if this process holds it (the
        core layer's memberships expire, and a restarted Redis forgets them).
        """
        timeout = settings.REALTIME_PUBLISH_TIMEOUT
        while True:
            if group in self._leaving:
                await asyncio.shield(self._leaving[group])
            elif group in self._joining:
                await asyncio.shield(self._joining[group])  # raises if that join failed
                if not refresh:
                    continue
                refresh = False
            elif group not in self._joined or refresh:
                await self._add(group, timeout)
                refresh = False
            else:
                break
        self.watchers.setdefault(group, set()).add(consumer)
        self._ensure_receiving()

    async def _open_channel(self, timeout: float) -> None:
        """This process's channel; concurrent first joins share one (``shards.new_receiving_channel``)."""
        while self.channel is None:
            if self._opening is not None:
                await asyncio.shield(self._opening)  # raises if that attempt failed
                continue
            opening = self._opening = self.loop.create_future()
            try:
                self.channel = await asyncio.wait_for(shards.new_receiving_channel(self.layer), timeout)
            except BaseException as error:
                opening.set_exception(error)
                opening.exception()  # retrieved: no warning when nobody waits
                raise
            else:
                opening.set_result(None)
            finally:
                self._opening = None

    async def _add(self, group: str, timeout: float) -> None:
        done = self._joining[group] = self.loop.create_future()
        try:
            # Opened here, while this join is registered: the channel is not
            # closed (``_stop_receiving``) while a join is under way.
            await self._open_channel(timeout)
            await asyncio.wait_for(self.layer.group_add(group, self.channel), timeout)
        except BaseException as error:
            self._joined.discard(group)
            done.set_exception(error)
            done.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        else:
            self._joined.add(group)
            done.set_result(None)
        finally:
            del self._joining[group]

    async def leave(self, consumer: Member, group: str) -> None:
        """``consumer`` no longer receives ``group``; the last one out leaves the group. Never raises."""
        members = self.watchers.get(group)
        if members is not None:
            members.discard(consumer)
            if members:
                return
            del self.watchers[group]
        if group in self._joined and group not in self._joining and group not in self._leaving:
            self._joined.discard(group)
            done = self._leaving[group] = self.loop.create_future()
            try:
                await self.layer.group_discard(group, self.channel)
            except Exception as error:  # noqa: BLE001 - leaving must not fail; the group expires or dies with Redis
                logger.debug("group_discard of %s failed: %s", group, error)
            finally:
                del self._leaving[group]
                done.set_result(None)
        if not (self.watchers or self._joined or self._joining or self._leaving):
            self._stop_receiving()

    # --- receiving ---------------------------------------------------------------------

    def _ensure_receiving(self) -> None:
        if self._task is None or self._task.done():
            self._task = self.loop.create_task(self._receive_loop(), name="realtime-run-hub")

    def _stop_receiving(self) -> None:
        """No run is watched here any more: stop receiving, and close the channel if safe.

        Only a receive that is parked may be cancelled (the pub/sub layer then
        unsubscribes the channel and the next join opens another). Otherwise the
        hub's task is busy — maybe inside this very call, delivering a final
        event inline — and simply ends after it; the channel stays for the next join.
        """
        if self._task is not None and not self._task.done() and self._parked:
            self._task.cancel()
            self._task = None
            self.channel = None

    async def _receive_loop(self) -> None:
        while self.watchers:
            self._parked = True
            try:
                message = await self.layer.receive(self.channel)
            except Exception as error:  # noqa: BLE001 - any layer failure means "fail over"
                # Debug only: the layer probe logs the outage once and its end once.
                logger.debug("channel layer receive failed: %s", error)
                for members in list(self.watchers.values()):
                    for consumer in list(members):
                        consumer.on_layer_down(error)
                await asyncio.sleep(settings.REALTIME_POLL_INTERVAL)
                continue
            finally:
                self._parked = False
            try:
                await self._dispatch(message)
            except Exception:  # one watcher's failure must not stop the others' events
                logger.exception("delivering %s#%s failed", message.get("group"), message.get("seq"))

    async def _dispatch(self, message: dict) -> None:
        members = self.watchers.get(message.get("group", ""))
        if not members:
            return
        if message.get("type") == DELETED_MESSAGE_TYPE:
            for consumer in list(members):
                self._on_own_task(consumer.on_deleted())
            return
        seq, text, final = message["seq"], message["text"], message.get("final", False)
        for consumer in list(members):
            if consumer.closed:
                continue
            if consumer.delivers_without_waiting(seq):
                await consumer.on_event(seq, text, final=final)  # sends without suspending
            else:
                # Busy, or a gap to fill from the log first: on its own task, so
                # this run's other watchers (and other runs) are not kept waiting.
                self._on_own_task(consumer.on_event(seq, text, final=final))

    def _on_own_task(self, coroutine) -> None:
        task = self.loop.create_task(coroutine)
        self._deliveries.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._deliveries.discard)


_hubs: per_loop.Instances[asyncio.AbstractEventLoop, RunHub] = per_loop.Instances()


def get_hub(layer: BaseChannelLayer) -> RunHub:
    """The running event loop's hub on ``layer`` (one per server process)."""
    hub = per_loop.of_running_loop(_hubs, lambda loop: RunHub(loop, layer))
    if hub.layer is not layer:  # the configured layer changed (a test's settings): a hub on the new one
        hub = _hubs[hub.loop] = RunHub(hub.loop, layer)
    return hub
