"""Publish cost per event from a worker-like synchronous process.

Compares, on the channel layer the environment selects:
- ``ours``: realtime.events.publisher.publish(event) — encode the frame once, send it
  from the process's long-lived publisher loop (one Redis connection pool);
- ``group_send``: realtime.events.publisher.group_send alone;
- ``tutorial``: async_to_sync(channel_layer.group_send) per call, the Channels
  tutorial pattern (a fresh event loop, so a fresh Redis connection, per call).

Usage: python bench/publish_cost.py '{"n": 300}'  → one JSON line (ms per call).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _timed(call, n: int) -> dict:
    from bench.client import percentiles

    samples = []
    for _ in range(n):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1000)
    stats = percentiles(samples)
    stats.update({key: round(value, 3) for key, value in stats.items() if isinstance(value, float)})
    return stats


def main(spec: dict) -> dict:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "quikday.settings")
    django.setup()
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer
    from django.utils import timezone

    from realtime.events import publisher
    from realtime.models import RunEvent
    from realtime.protocol import frames

    n = int(spec.get("n", 300))
    run_id = uuid.uuid4()
    group = frames.group_name(run_id)
    # An unsaved event of a typical size: publish() only reads its fields.
    event = RunEvent(
        run_id=run_id,
        seq=1,
        type=frames.STEP_SUCCEEDED,
        payload={
            "step": {"index": 0, "tool": "echo", "args": {"n": 1}, "status": "succeeded", "output": {"n": 1}}
        },
        ts=timezone.now(),
    )
    message = {"type": publisher.GROUP_MESSAGE_TYPE, "seq": 1, "final": False, "text": "x" * 300}
    layer = get_channel_layer()
    publisher.group_send(group, message)  # warm the long-lived loop's connection
    result = {
        "layer": type(layer).__name__,
        "ours_publish": _timed(lambda: publisher.publish(event), n),
        "ours_group_send": _timed(lambda: publisher.group_send(group, message), n),
        "tutorial": _timed(lambda: async_to_sync(layer.group_send)(group, message), max(20, n // 3)),
    }
    return result


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1] if len(sys.argv) > 1 else "{}"))), flush=True)
