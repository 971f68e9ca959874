"""The one door between a connection's Stream and the process's delivery registries.

A web process (one event loop) keeps plain registries of its streams, each
made on first use in the running loop (realtime.delivery.per_loop):

- the hub (realtime.delivery.hub): one layer subscription per run; calls ``on_event``
  and ``on_deleted`` of the run's streams, ``on_layer_down`` when the layer fails;
- the poller (realtime.delivery.poller): one read per tick for every polled
  run stream; calls ``on_event`` / ``on_deleted``;
- the layer probe (realtime.delivery.failover): checks the layer; calls
  ``on_layer_down`` / ``on_layer_up`` of the push streams that need a server;
- the access watch (realtime.delivery.access_watch): re-checks credentials; calls ``on_revoked``.

A stream (realtime.sockets.stream) enters and leaves them only through the
functions here, and ``forget`` takes it out of all of them at once — the
process keeps nothing of a closed connection. (The run list's own re-read,
realtime.runlist.list_poller, is the run list's: a ListStream enters and
leaves it itself, so delivery/ imports nothing of runlist/.)
"""

from __future__ import annotations

from realtime.delivery.access_watch import Credentials, get_access_watch
from realtime.delivery.failover import get_probe
from realtime.delivery.hub import get_hub
from realtime.delivery.poller import get_poller


def watch_layer(stream, layer) -> None:
    """Have the layer probe degrade and recover ``stream`` with the layer's health."""
    get_probe().register(stream, layer)


def layer_suspected() -> None:
    """A stream saw the layer fail: the probe checks now."""
    get_probe().suspect()


def hub_channel(layer) -> str | None:
    """The channel the process's hub receives every run's events on."""
    return get_hub(layer).channel


async def join(stream, group: str, layer, *, refresh: bool) -> None:
    """``stream`` receives ``group``'s events through the process's hub. Raises when the layer fails."""
    await get_hub(layer).join(stream, group, refresh=refresh)


async def leave(stream, group: str, layer) -> None:
    """``stream`` no longer receives ``group``. Never raises."""
    await get_hub(layer).leave(stream, group)


def poll(stream, interval: float | None) -> None:
    """Have the poller read ``stream``'s run every ``interval`` seconds (None: not at all)."""
    if interval is None:
        get_poller().unwatch(stream)
    else:
        get_poller().watch(stream, interval=interval)


def watch_access(stream, *, user, token_key: str | None, session) -> None:
    """Have the access watch re-check the credentials ``stream`` was let in with."""
    get_access_watch().watch(stream, Credentials.of(user=user, token_key=token_key, session=session))


def forget(stream) -> None:
    """Take ``stream`` out of the probe, the poller and the access watch (idempotent)."""
    get_probe().unregister(stream)
    get_poller().unwatch(stream)
    get_access_watch().unwatch(stream)
