"""Debug only: tracemalloc in a server process, its snapshots dumped on SIGUSR2.

With QUIKDAY_TRACEMALLOC_DIR set, the process traces its allocations (which
slows it and grows it: never in production) and, each time it receives
SIGUSR2, writes a snapshot to ``<dir>/<pid>-<n>.tracemalloc``; the soak test
(tests/soak/) compares the one after warm-up with the last. Unset, nothing
happens.
"""

from __future__ import annotations

import os
import signal
import tracemalloc
from pathlib import Path

ENV = "QUIKDAY_TRACEMALLOC_DIR"
FRAMES = 10


def install_from_env() -> bool:
    directory = os.environ.get(ENV)
    if not directory:
        return False
    tracemalloc.start(FRAMES)
    dumps = {"count": 0}

    def dump(signum, frame) -> None:
        dumps["count"] += 1
        path = Path(directory) / f"{os.getpid()}-{dumps['count']}.tracemalloc"
        tracemalloc.take_snapshot().dump(str(path.with_suffix(".partial")))
        path.with_suffix(".partial").rename(path)  # the reader sees a whole file or none

    signal.signal(signal.SIGUSR2, dump)
    return True
