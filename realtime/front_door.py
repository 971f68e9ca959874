"""The one door between a connection's Stream and the process's delivery registries.

A web process (one event loop) keeps plain registries of its streams, each
made on first use in the running loop (realtime.per_loop):

- the hub (realtime.hub): one layer subscription per run; calls ``on_event``
  and ``on_deleted`` of the run's streams, ``on_layer_down`` when the layer fails;
- the poller (realtime.poller) and the run-list poller (realtime.list_poller):
  one read per tick for every polled stream; call ``on_event`` / ``on_deleted``;
- the layer probe (realtime.failover): checks the layer; calls
  ``on_layer_down`` / ``on_layer_up`` of the push streams that need a server;
- the access watch (realtime.access_watch): re-checks credentials; calls ``on_revoked``.

A stream (realtime.consumers.stream) enters and leaves them only through the
functions here, and ``forget`` takes it out of all of them at once — the
process keeps nothing of a closed connection.
"""

from __future__ import annotations

from datetime import datetime

from realtime.access_watch import Credentials, get_access_watch
from realtime.failover import get_probe
from realtime.hub import get_hub
from realtime.list_poller import get_list_poller
from realtime.poller import get_poller


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


def poll_list(stream, interval: float, *, since: datetime | None = None) -> None:
    """Have the run-list poller re-read ``stream``'s runs every ``interval`` seconds."""
    get_list_poller().watch(stream, interval=interval, since=since)


def watch_access(stream, *, user, token_key: str | None, session) -> None:
    """Have the access watch re-check the credentials ``stream`` was let in with."""
    get_access_watch().watch(stream, Credentials.of(user=user, token_key=token_key, session=session))


def forget(stream) -> None:
    """Take ``stream`` out of the probe, the pollers and the access watch (idempotent)."""
    get_probe().unregister(stream)
    get_poller().unwatch(stream)
    get_list_poller().unwatch(stream)
    get_access_watch().unwatch(stream)
