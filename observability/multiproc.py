"""prometheus-client's multiprocess mode: where the files live, and forgetting dead processes.

Every process of a host (Daphne processes, Celery's main process and its
prefork children) writes its metrics to files in one directory, and /metrics
sums them. Counters of a process that died stay in the sum (what it counted
happened); its *live* gauges (open sockets, RSS) must leave it, which is what
``mark_process_dead`` does. A child that exits cleanly calls it for itself; a
process that was killed is found missing by the next scrape.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

_LIVE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def default_dir(database: dict[str, Any], redis_url: str, queue: str) -> Path:
    """A directory per deployment per host: its processes share it, other deployments don't.

    Named by a hash of where the deployment's data lives (never the
    credentials themselves), under the temp dir, which a PaaS container
    starts empty.
    """
    identity = "|".join(
        str(part)
        for part in (
            database.get("ENGINE"),
            database.get("HOST"),
            database.get("PORT"),
            database.get("NAME"),
            redis_url.rsplit("@", 1)[-1],
            queue,
        )
    )
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"quikday-metrics-{os.getuid()}-{digest}"


def enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def directory() -> str:
    return os.environ["PROMETHEUS_MULTIPROC_DIR"]


def ensure_dir() -> None:
    if enabled():
        os.makedirs(directory(), exist_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def forget_dead_processes() -> list[int]:
    """Remove the live gauges of every process of this directory that no longer exists."""
    from prometheus_client import multiprocess

    dead = set()
    for path in glob.glob(os.path.join(directory(), "gauge_live*_*.db")):
        match = _LIVE_FILE.match(os.path.basename(path))
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, directory())
    return sorted(dead)


def process_exiting() -> None:
    """This process ends (a Celery pool child): its live gauges leave the sum now."""
    if enabled():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), directory())
