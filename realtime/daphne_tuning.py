"""Daphne's WebSocket stack, tuned at start-up: per-connection and per-frame costs, close timeout.

Applied once by quikday/asgi.py; each change is measured in docs/benchmarks.md.
Each patch names the package versions it was read against and the names it
replaces; on any other version, or with a name gone, start-up fails with a
``TuningOutdated`` that says which patch to re-read (a patch that silently
stopped applying would lose its gain unnoticed).
"""

from __future__ import annotations

import gc
from importlib import metadata

# The major.minor releases each patched package was read against.
VERIFIED = {"autobahn": ("26.10",), "daphne": ("4.2",)}


class TuningOutdated(RuntimeError):
    """An installed autobahn or Daphne is not the one a patch here was written for."""


def check_version(package: str) -> None:
    """Raise TuningOutdated unless ``package``'s installed major.minor is one of VERIFIED's."""
    installed = metadata.version(package)
    if ".".join(installed.split(".")[:2]) not in VERIFIED[package]:
        raise TuningOutdated(
            f"realtime.daphne_tuning patches {package} as of {', '.join(VERIFIED[package])}, "
            f"but {package} {installed} is installed: re-read the patches against it, "
            "then add its version to VERIFIED"
        )


def _require(module, name: str) -> object:
    """``module.name``, or TuningOutdated when the package renamed it."""
    found = getattr(module, name, None)
    if found is None:
        raise TuningOutdated(
            f"realtime.daphne_tuning patches {module.__name__}.{name}, which no longer exists"
        )
    return found


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

    For every connection it pretty-prints its ~40 options (``pformat``), and
    for every frame sent or received it styles names with click
    (``hltype``/``hlval``): a visible share of the web process's CPU in the
    connect-storm and fan-out workloads (docs/benchmarks.md). Here those
    helpers return a lazy value that renders the same text if a debug line is
    ever written. False when autobahn (Daphne) is not installed.
    """
    try:
        from autobahn.twisted import websocket as twisted_websocket
        from autobahn.websocket import protocol
    except ImportError:
        return False
    check_version("autobahn")
    patched = {protocol: ("pformat", "hltype", "hlval"), twisted_websocket: ("hltype", "hlval")}
    for module, names in patched.items():
        for name in names:
            current = _require(module, name)
            if not hasattr(current, "eager"):
                setattr(module, name, _lazy(current))
    return True


# How long the server waits for a client to answer its close frame before it
# drops the connection. autobahn's default is 1 s, and it then *aborts* the TCP
# connection (RST), which discards what the client had not read yet — the
# run_completed frame just before the close included. A client more than 1 s
# behind (the bench's, at 4,000 frames/s) lost it; now only one 30 s behind.
CLOSE_HANDSHAKE_TIMEOUT = 30.0


def wait_longer_for_close_replies() -> bool:
    """Daphne's WebSocket factory, made with ``closeHandshakeTimeout`` = CLOSE_HANDSHAKE_TIMEOUT."""
    try:
        from daphne import ws_protocol
    except ImportError:
        return False
    check_version("daphne")
    WebSocketFactory = _require(ws_protocol, "WebSocketFactory")
    if not hasattr(WebSocketFactory, "setProtocolOptions"):
        raise TuningOutdated("daphne's WebSocketFactory no longer has autobahn's setProtocolOptions")
    if getattr(WebSocketFactory.__init__, "realtime_tuned", False):
        return True
    original = WebSocketFactory.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.setProtocolOptions(closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT)

    __init__.realtime_tuned = True
    WebSocketFactory.__init__ = __init__
    return True


def freeze_startup_heap() -> None:
    """Keep the objects loaded at start-up out of every later garbage collection.

    Django, DRF, Twisted and their modules are a few hundred thousand objects
    that live as long as the process; a full (generation 2) collection walks
    them all and pauses the event loop, which every frame in flight waits out
    (docs/benchmarks.md). ``gc.freeze()`` moves them to the permanent generation,
    which collections skip; objects created later are collected as before.
    """
    gc.collect()
    gc.freeze()


def apply() -> None:
    make_autobahn_logging_lazy()
    wait_longer_for_close_replies()
    freeze_startup_heap()
