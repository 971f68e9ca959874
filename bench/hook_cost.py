"""What observability.record's hooks cost per call, with the metrics on and off, in CPU time.

The hooks the realtime code calls per connect (``socket_opened`` +
``socket_closed``), per frame (``frame_sent``, a live frame and a control
frame) and per committed event (``event_committed``, a step's), each
``-n`` times in a fresh process per setting (prometheus-client reads
PROMETHEUS_MULTIPROC_DIR when it is imported), settings interleaved. Lines at
the bench's level (LOG_LEVEL=WARNING: the lifecycle lines are off, as in
``make bench``). Reported per call: CPU µs (``time.process_time``) and the
slowest single call in wall time, which shows a hook that blocks (a page
fault on a metrics file the kernel is writing back) rather than computes.

Usage: python bench/hook_cost.py [--settings on,off,on,off] [--dir DIR] [-n 20000]
  ``--dir``: the metrics directory of the "on" runs (default: a fresh one under the temp dir).
One JSON line per setting and trial.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FRAME = '{{"type":"step_started","run_id":"r","seq":{seq},"ts":"{ts}","payload":{{}}}}'


class _Event:
    run_id, seq, type = "r", 1, "step_succeeded"
    payload = {
        "step": {
            "index": 0, "tool": "echo", "status": "succeeded",
            "started_at": "2026-12-01T10:00:00.000000+00:00",
            "finished_at": "2026-12-01T10:00:00.250000+00:00",
        }
    }  # fmt: skip


def _per_call(calls: int, body) -> dict[str, float]:
    slowest = 0.0
    cpu = time.process_time()
    for index in range(calls):
        began = time.perf_counter()
        body(index)
        slowest = max(slowest, time.perf_counter() - began)
    return {
        "cpu_us": round((time.process_time() - cpu) * 1e6 / calls, 2),
        "slowest_ms": round(slowest * 1000, 3),
    }


def measure(calls: int) -> dict[str, dict[str, float]]:
    """In this process, as configured by the environment."""
    import django

    django.setup()
    from datetime import UTC, datetime

    from observability import record

    ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    frames = [FRAME.format(seq=seq, ts=ts) for seq in range(calls)]  # a fresh string each: no cached ts
    conn = record.socket_opened(mode="push", run_id="r")
    event = _Event()

    def connect(_: int) -> None:
        record.socket_closed(record.socket_opened(mode="push", run_id="r"), 1000)

    return {
        "connect": _per_call(calls, connect),
        "live_frame": _per_call(calls, lambda i: record.frame_sent(conn, "live", frames[i])),
        "control_frame": _per_call(calls, lambda i: record.frame_sent(conn, "control", "{}")),
        "event": _per_call(calls, lambda _: record.event_committed(event)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settings", default="on,off,on,off")
    parser.add_argument("--dir", help="PROMETHEUS_MULTIPROC_DIR of the runs (default: a fresh temp dir)")
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.n)))
        return 0
    own_dir = args.dir is None
    directory = args.dir or tempfile.mkdtemp(prefix="quikday-hook-cost-")
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": directory,
        "DJANGO_SETTINGS_MODULE": "quikday.settings",
        "LOG_LEVEL": "WARNING",
        "SECRET_KEY": os.environ.get("SECRET_KEY", "hook-cost-only"),
    }
    try:
        for setting in args.settings.split(","):
            env["METRICS_ENABLED"] = "1" if setting == "on" else "0"
            done = subprocess.run(
                [sys.executable, __file__, "--child", "-n", str(args.n)],
                cwd=ROOT, env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            print(json.dumps({"metrics": setting, "dir": directory, **json.loads(done.stdout)}), flush=True)
    finally:
        if own_dir:
            import shutil

            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
