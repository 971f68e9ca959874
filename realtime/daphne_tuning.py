"""Per-connection and per-frame costs of Daphne's WebSocket stack, removed at start-up.

Applied once by quikday/asgi.py; each change is measured in docs/benchmarks.md.
"""

from __future__ import annotations

import gc


class _Lazy:
    """``render(value)``, computed only if a log line actually renders it."""

    __slots__ = ("render", "value")

    def __init__(self, render, value: object) -> None:
        self.render = render
        self.value = value

    def __str__(self) -> str:
        return str(self.render(self.value))

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _lazy(render):
    def make(value: object) -> _Lazy:
        return _Lazy(render, value)

    make.eager = render
    return make


def make_autobahn_logging_lazy() -> bool:
    """autobahn formats its debug lines' arguments even when debug logging is off.

    For every connection it pretty-prints ~40 options (``pformat``: 7 % of the
    web process's CPU in a 1,000-client connect storm), and for every frame
    sent or received it styles names with click (``hltype``/``hlval``: 3 % in
    the fan-out workload). Here those helpers return a lazy value that renders
    the same text if a debug line is ever written. False when autobahn (Daphne)
    is not installed.
    """
    try:
        from autobahn.twisted import websocket as twisted_websocket
        from autobahn.websocket import protocol
    except ImportError:
        return False
    patched = {protocol: ("pformat", "hltype", "hlval"), twisted_websocket: ("hltype", "hlval")}
    for module, names in patched.items():
        for name in names:
            current = getattr(module, name, None)
            if current is not None and not hasattr(current, "eager"):
                setattr(module, name, _lazy(current))
    return True


def freeze_startup_heap() -> None:
    """Keep the objects loaded at start-up out of every later garbage collection.

    Django, DRF, Twisted and their modules are a few hundred thousand objects
    that live as long as the process; a full (generation 2) collection walked
    them all and paused the event loop for 60 to 140 ms, which every frame in
    flight waited out. ``gc.freeze()`` moves them to the permanent generation,
    which collections skip; objects created later are collected as before.
    """
    gc.collect()
    gc.freeze()


def apply() -> None:
    make_autobahn_logging_lazy()
    freeze_startup_heap()
