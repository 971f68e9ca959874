"""A work-around for kombu's Redis transport: a worker must survive a Redis restart.

When the broker connection drops, Celery's consumer first ``collect()``s the
connection — which detaches its transport (``transport.client = None``) but
keeps its default channel — then ``close()``s it, which closes that channel
again. Closing a channel restores its unacknowledged messages, and building
the Redis client for that reads ``transport.client.hostname``: an
AttributeError, which is not one of the connection errors the caller ignores,
so the worker logs "Unrecoverable error" and exits (kombu 5.7.0, Celery 5.7.0;
reproduced by tests/runs/test_redis_restart_e2e.py). The same happens to the
acknowledgement of a task that was running across the outage.

A channel whose transport is detached cannot reach Redis by definition, so it
is made to say so with Redis' own ConnectionError: every caller already treats
that as "the broker is gone" — the consumer reconnects on a fresh connection,
and the unacknowledged message stays in Redis for ``visibility_timeout``
(or vanished with a Redis restarted empty, which the run sweep handles).
"""

from __future__ import annotations

import redis
from kombu.transport import redis as kombu_redis

from server import upstream


def apply() -> bool:
    """Patch kombu's Redis channel; return whether it did. The kombu release it was read
    against is registered in server.upstream ("kombu-redis-connparams")."""
    if not upstream.usable("kombu-redis-connparams"):
        return False
    channel = kombu_redis.Channel
    if getattr(channel._connparams, "quikday_patched", False):
        return True
    original = channel._connparams

    def _connparams(self, asynchronous=False):
        if self.connection is None or self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection of this channel was closed")
        return original(self, asynchronous=asynchronous)

    _connparams.quikday_patched = True
    channel._connparams = _connparams
    return True
