"""The web command's Daphne (server/daphne_uvloop.py), its collector's thresholds set, its pauses timed.

For bench/web_cost.py's ``--gc``: ``GC_PROBE_THRESHOLD`` ("700,10,10", or
"default" for the web process's own) is set before Daphne starts, and every
collection after the start-up heap is frozen is timed (``gc.callbacks``). At
exit the pauses per generation are written to ``GC_PROBE_OUT`` as JSON.
Same arguments as ``daphne``.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import time

_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
_began = [0.0]
_frozen = [False]


def _timed(phase: str, info: dict) -> None:
    if not _frozen[0]:  # start-up is not the steady state measured
        # get_freeze_count walks every frozen object (a collection's worth of CPU, and it
        # made a first version of this probe charge that to each collection): asked only
        # until there are some.
        _frozen[0] = gc.get_freeze_count() > 0
        if not _frozen[0] or phase != "start":
            return
    if phase == "start":
        _began[0] = time.perf_counter()
    else:
        _pauses[info["generation"]].append(time.perf_counter() - _began[0])


def _write() -> None:
    with open(os.environ["GC_PROBE_OUT"], "w") as out:
        json.dump({str(gen): values for gen, values in _pauses.items()}, out)


def main() -> None:
    threshold = os.environ.get("GC_PROBE_THRESHOLD", "default")
    if threshold != "default":
        gc.set_threshold(*(int(part) for part in threshold.split(",")))
    gc.callbacks.append(_timed)
    atexit.register(_write)
    from server import daphne_uvloop

    daphne_uvloop.main()


if __name__ == "__main__":
    main()
