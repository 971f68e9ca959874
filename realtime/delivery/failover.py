"""Automatic failover from push to polling, and back, per server process.

Push streams (push and hybrid policies, and every run list) register with
their event loop's ``LayerProbe`` (through realtime.delivery.front_door). Each stream
owns its state and makes its own switch between push and the poller
(``on_layer_down`` / ``on_layer_up``, realtime.sockets.stream); the probe
decides when. It checks the channel layer end to end every
REALTIME_POLL_INTERVAL, each of its Redis servers on its own (a sharded
layer, realtime/events/shards.py): it sends a message to a group of its own on that
server and waits for it to come back on a channel of this process (publish
and subscription both work — with the pub/sub layer that also proves the
subscriber connection has re-subscribed after a Redis restart). It is also
woken at once when a consumer's group_add or receive raises, or a publish
from this process fails.

- A server down: every registered connection whose run needs that server is
  "degraded": the process's poller (realtime/delivery/poller.py) reads its run's log
  every REALTIME_POLL_INTERVAL. Watchers of runs on the other servers stay
  on push.
- Layer back: each degraded stream joins its group again
  (``on_layer_up`` → ``resubscribe``: the pub/sub layer re-subscribes, the core layer's
  memberships may be gone with a restarted Redis), leaves the poller (hybrid
  returns to its slow interval), then catches up from the log — so an event
  published between the last poll and the re-join is not lost. Deliveries are
  deduplicated by seq, so the client sees no gap and no duplicate.
- With the core RedisChannelLayer, group memberships expire after
  ``group_expiry``; the probe re-adds every live subscription each
  group_expiry/3 so long-lived connections keep theirs.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Protocol

from channels.layers import BaseChannelLayer
from django.conf import settings

from realtime.delivery import per_loop
from realtime.events import publisher, shards

logger = logging.getLogger(__name__)

PROBE_MESSAGE_TYPE = "realtime.probe"


class PushWatcher(Protocol):
    """What the probe needs of a push stream (realtime.sockets.stream.Stream).

    The stream keeps its own state; the probe only reads it and asks the
    stream to change it through these methods.
    """

    @property
    def run_id(self) -> uuid.UUID | None: ...
    @property
    def degraded(self) -> bool: ...
    @property
    def subscribed(self) -> bool: ...

    def on_layer_down(self) -> None:
        """Read the run from the log until the layer is back."""

    async def on_layer_up(self) -> bool:
        """Rejoin the group, stop polling, fill from the log; True when back on push."""

    async def resubscribe(self) -> bool:
        """Join the run's group again; False when the layer fails."""

    def layer_names(self) -> tuple[list[str], str | None]:
        """The groups it receives and the channel they arrive on (which Redis servers it needs)."""


class LayerProbe(per_loop.Ticker):
    """Watches the channel layer's health for the push streams of one event loop.

    A check is due every REALTIME_POLL_INTERVAL while a stream is registered,
    and at once when woken (a stream saw the layer fail, a publish failed).
    """

    task_name = "realtime-layer-probe"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.consumers: set[PushWatcher] = set()
        self.healthy = True
        self._due = 0.0
        self._channel: str | None = None
        self._stem: str | None = None
        self._groups: dict[int, str] = {}  # Redis server → the probe's group on it
        self._layer: BaseChannelLayer | None = None
        self._refreshed_at = loop.time()
        # When the layer was first seen down: the outage is logged once, and once when it ends.
        self._down_since: float | None = None
        # Some watcher was left degraded by the last check (its recover failed, or the layer is down).
        self._some_degraded = False

    def register(self, consumer: PushWatcher, layer: BaseChannelLayer) -> None:
        self.consumers.add(consumer)
        self._layer = layer
        if not self.running:
            self._due = self.loop.time() + settings.REALTIME_POLL_INTERVAL
            self.start()

    def unregister(self, consumer: PushWatcher) -> None:
        if consumer in self.consumers:
            self.consumers.discard(consumer)
            if not self.consumers:
                self._wake.set()  # lets the task end now rather than after its sleep

    def wake(self) -> None:
        """Check now."""
        self._due = self.loop.time()
        self._wake.set()

    def suspect(self) -> None:
        """A stream saw the layer fail: count it unhealthy and check now."""
        self.healthy = False
        self.wake()

    def next_due(self) -> float | None:
        return self._due if self.consumers else None

    async def tick(self) -> None:
        self._due = self.loop.time() + settings.REALTIME_POLL_INTERVAL
        await self.check()

    async def check(self) -> None:
        """One health check of each Redis server; degrade or recover the connections that need it."""
        count = shards.count(self._layer)
        errors = {}
        for index in range(count):
            if (error := await self._round_trip(index)) is not None:
                errors[index] = error
        down = set(errors)
        if down and self._down_since is None:
            self._down_since = self.loop.time()
            logger.warning(
                "channel layer unreachable (Redis server %s of %d: %s); their watchers fall back to polling"
                " until it is back",
                ",".join(map(str, sorted(down))),
                count,
                "; ".join(str(error) for error in errors.values()),
            )
        elif not down and self._down_since is not None:
            logger.warning(
                "channel layer is back after %.1f s; %d watchers return to push",
                self.loop.time() - self._down_since,
                sum(1 for c in self.consumers if c.degraded),
            )
            self._down_since = None
        # Every server up, no watcher degraded when the last check ended and none
        # since (a watcher that degrades itself calls suspect()): no watcher has
        # anything to change. Looking at each one anyway, every check, was the
        # largest share of an idle process's CPU (docs/benchmarks.md).
        if down or not self.healthy or self._some_degraded:
            for consumer in list(self.consumers):
                groups, channel = consumer.layer_names()
                needs = frozenset().union(*(shards.watcher_shards(self._layer, g, channel) for g in groups))
                if needs & down:
                    if not consumer.degraded:
                        consumer.on_layer_down()
                elif consumer.degraded:
                    try:
                        await consumer.on_layer_up()
                    except Exception:
                        logger.warning(
                            "run %s watcher could not return to push", consumer.run_id, exc_info=True
                        )
            self._some_degraded = any(consumer.degraded for consumer in self.consumers)
        self.healthy = not down
        if self.healthy:
            await self._refresh_memberships()

    async def _round_trip(self, index: int) -> Exception | None:
        """A message through Redis server ``index`` of the layer and back, as a run's events travel:
        a group on that server, received on a channel of this process. The error, or None when healthy."""
        layer = self._layer
        token = uuid.uuid4().hex
        if self._stem is None:
            self._stem = f"realtime.probe.{uuid.uuid4().hex[:12]}"
        group = self._groups.setdefault(index, shards.group_on(layer, index, self._stem))
        try:
            async with asyncio.timeout(settings.REALTIME_PUBLISH_TIMEOUT):
                if self._channel is None:
                    self._channel = await shards.new_receiving_channel(layer)
                # Added every time: a restarted Redis (or the core layer's expiry) forgets it.
                await layer.group_add(group, self._channel)
                await publisher.send_probe(layer, group, {"type": PROBE_MESSAGE_TYPE, "token": token})
                while (await layer.receive(self._channel)).get("token") != token:
                    pass  # a late answer to an earlier probe
        except Exception as error:  # noqa: BLE001 - any failure means "unhealthy"
            logger.debug("channel layer probe of Redis server %d failed: %r", index, error)
            # A cancelled receive may drop the channel: start afresh.
            self._channel = None
            return error
        return None

    async def _refresh_memberships(self) -> None:
        expiry = getattr(self._layer, "group_expiry", None)
        if not expiry or self.loop.time() - self._refreshed_at < expiry / 3:
            return
        self._refreshed_at = self.loop.time()
        for consumer in list(self.consumers):
            if consumer.subscribed and not await consumer.resubscribe():
                consumer.on_layer_down()


_probes: per_loop.Instances[asyncio.AbstractEventLoop, LayerProbe] = per_loop.Instances()


def get_probe() -> LayerProbe:
    """The layer probe of the running event loop (one per server process)."""
    return per_loop.of_running_loop(_probes, LayerProbe)


def report_publish_failures() -> None:
    """Have the publisher wake the probes when a publish fails (called once, by RealtimeConfig.ready).

    The publisher imports nothing above it, so it is told whom to tell.
    """
    publisher.on_publish_failure(publish_failed)


def publish_failed() -> None:
    """Called from any thread when a publish of this process failed: check the layer now."""
    try:
        probes = list(_probes.items())
    except RuntimeError:  # a loop's probe was being added meanwhile; the timer still runs
        return
    for loop, probe in probes:
        if probe.consumers and not loop.is_closed():
            loop.call_soon_threadsafe(probe.wake)
