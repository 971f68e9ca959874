"""Which Redis server of a sharded channel layer a run's events go through.

channels-redis spreads a layer's names over its ``hosts`` by CRC32
(``_consistent_hash``), and the two layers do it differently:

- pub/sub layer: a group is the Redis pub/sub channel ``<prefix>__group__<group>``
  on the server its name hashes to; a process subscribes there and hands what
  arrives to its local channel (the RunHub's), whichever server that channel's
  own subscription is on. A run's events need the group's server only.
- core layer: a group's members are a sorted set on the server ``group``
  hashes to; ``group_send`` reads it there and writes each member's message to
  the server of the member's process part (``specific.<process>!``), where the
  process's receive loop reads. A run's events need both servers.
  (Its ``send`` to a process channel hashes the *whole* name instead, which
  with several servers lands on a server nobody reads: nothing here uses it.)

The layer probe (realtime/delivery/failover.py) checks each server on its own, and
only the watchers whose runs depend on a server that is down fall back to
polling. A process receives on channels made by ``new_receiving_channel``:
on the pub/sub layer no Redis server is involved in that channel at all.

What this reads of channels-redis' internals (``_consistent_hash``,
``_kwargs``, ``_get_layer()``, a loop layer's ``channels``) is registered in
server.upstream ("channels-redis-sharding"), with the release it was read
against; tests/test_upstream.py fails on any other.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer
from channels_redis.utils import _consistent_hash, decode_hosts


def count(layer: Any) -> int:
    """How many Redis servers ``layer`` spreads its names over (1 for any other layer)."""
    if isinstance(layer, RedisPubSubChannelLayer):
        return len(decode_hosts(layer._kwargs.get("hosts")))
    if isinstance(layer, RedisChannelLayer):
        return layer.ring_size
    return 1


def _pubsub_prefix(layer: RedisPubSubChannelLayer) -> str:
    return layer._kwargs.get("prefix", "asgi")


def group_shard(layer: Any, group: str) -> int:
    """The server holding ``group`` (its pub/sub channel, or its member set)."""
    if isinstance(layer, RedisPubSubChannelLayer):
        return _consistent_hash(f"{_pubsub_prefix(layer)}__group__{group}", count(layer))
    return _consistent_hash(group, count(layer))


def channel_shard(layer: Any, channel: str) -> int:
    """The server a process-specific channel's messages are written to and read from."""
    if isinstance(layer, RedisChannelLayer) and "!" in channel:
        return _consistent_hash(layer.non_local_name(channel), count(layer))
    return _consistent_hash(channel, count(layer))


def watcher_shards(layer: Any, group: str, process_channel: str | None) -> frozenset[int]:
    """The servers a watcher of ``group`` needs, given its process's channel on ``layer``."""
    needed = {group_shard(layer, group)}
    if isinstance(layer, RedisChannelLayer) and process_channel is not None:
        needed.add(channel_shard(layer, process_channel))
    return frozenset(needed)


def group_on(layer: Any, index: int, stem: str) -> str:
    """A group name (``stem`` plus a counter) that ``layer`` keeps on server ``index``."""
    for n in itertools.count():
        name = f"{stem}.{n}"
        if group_shard(layer, name) == index:
            return name
    raise AssertionError("unreachable")


async def new_receiving_channel(layer: Any) -> str:
    """A channel of this process that receives the groups it joins.

    ``new_channel()`` of the pub/sub layer also SUBSCRIBEs the channel on the
    server its name hashes to. Nothing publishes there (a group's messages
    arrive through the group's own subscription), and with that server down
    the call fails — every join of the process with it, whichever server the
    run's group is on. So on that layer the channel is only its local queue,
    which is what ``new_channel()`` adds besides the subscription.
    """
    if isinstance(layer, RedisPubSubChannelLayer):
        local = layer._get_layer()  # the running loop's layer
        name = f"{local.prefix}specific.{uuid.uuid4().hex}"
        local.channels[name] = asyncio.Queue()
        return name
    return await layer.new_channel()
