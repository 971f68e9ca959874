"""realtime.daphne_tuning: autobahn's debug arguments are lazy and render the same text."""

import os
import subprocess
import sys
from pprint import pformat

import pytest
from autobahn.twisted import websocket as twisted_websocket
from autobahn.websocket import protocol

from realtime import daphne_tuning


def test_the_patched_helpers_render_what_the_originals_rendered():
    assert daphne_tuning.make_autobahn_logging_lazy() is True  # idempotent: asgi.py applied it already
    options = [("autoPingInterval", 20, "WebSocketFactory"), ("openHandshakeTimeout", 5, "x")]
    assert str(protocol.pformat(options)) == pformat(options)
    assert f"{protocol.hlval(42)}" == protocol.hlval.eager(42)
    assert str(protocol.hltype(test_the_patched_helpers_render_what_the_originals_rendered)) == (
        protocol.hltype.eager(test_the_patched_helpers_render_what_the_originals_rendered)
    )
    assert twisted_websocket.hlval is not twisted_websocket.hlval.eager
    # Twice applied, still one layer deep.
    daphne_tuning.make_autobahn_logging_lazy()
    assert not hasattr(protocol.hltype.eager, "eager")


def test_a_lazy_value_costs_nothing_until_rendered():
    calls = []
    value = daphne_tuning._Lazy(lambda v: calls.append(v) or "x", 1)
    assert calls == []  # made, not rendered: what a disabled debug line costs
    assert str(value) == "x" and calls == [1]


def test_daphne_waits_for_a_slow_client_to_answer_its_close():
    from daphne.ws_protocol import WebSocketFactory

    assert daphne_tuning.wait_longer_for_close_replies() is True
    factory = WebSocketFactory(server_class=None)
    factory.setProtocolOptions(autoPingTimeout=30, allowNullOrigin=True)  # as daphne.server does
    assert factory.closeHandshakeTimeout == daphne_tuning.CLOSE_HANDSHAKE_TIMEOUT
    assert factory.failByDrop is False  # a protocol error is a close frame (1007, 1002), not a reset


def test_an_unverified_version_fails_loudly(monkeypatch):
    monkeypatch.setattr(daphne_tuning.metadata, "version", lambda package: "99.0.1")
    for package in ("autobahn", "daphne", "twisted"):
        with pytest.raises(daphne_tuning.TuningOutdated, match=rf"{package} 99\.0\.1 is installed"):
            daphne_tuning.check_version(package)
    with pytest.raises(daphne_tuning.TuningOutdated):
        daphne_tuning.make_autobahn_logging_lazy()
    with pytest.raises(daphne_tuning.TuningOutdated):
        daphne_tuning.wait_longer_for_close_replies()
    with pytest.raises(daphne_tuning.TuningOutdated, match=r"twisted 99\.0\.1 is installed"):
        daphne_tuning.check_transport_internals()  # unsent_bytes reads Twisted's private write buffer
    with pytest.raises(daphne_tuning.TuningOutdated, match="twisted"):
        daphne_tuning.apply()  # so start-up (quikday/asgi.py) fails


@pytest.mark.parametrize("gone", ["dataBuffer", "offset", "_tempDataLen", "bufferSize"])
def test_a_twisted_without_what_unsent_bytes_reads_fails_loudly(monkeypatch, gone):
    from twisted.internet import abstract

    class Renamed(abstract.FileDescriptor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if gone == "_tempDataLen":
                del self._tempDataLen

    if gone != "_tempDataLen":
        monkeypatch.delattr(abstract.FileDescriptor, gone)
    monkeypatch.setattr(abstract, "FileDescriptor", Renamed)
    with pytest.raises(daphne_tuning.TuningOutdated, match=gone):
        daphne_tuning.check_transport_internals()


def test_the_installed_twisted_has_what_unsent_bytes_reads():
    assert daphne_tuning.check_transport_internals() is True


def test_the_installed_versions_are_verified():
    for package in daphne_tuning.VERIFIED:
        daphne_tuning.check_version(package)


def test_a_renamed_function_fails_loudly(monkeypatch):
    monkeypatch.delattr(protocol, "hlval")
    with pytest.raises(daphne_tuning.TuningOutdated, match=r"autobahn\.websocket\.protocol\.hlval"):
        daphne_tuning.make_autobahn_logging_lazy()


def test_the_server_does_not_start_with_an_unverified_daphne():
    """The ASGI entry point (what Daphne imports at start-up) raises, naming the patch."""
    script = (
        "from realtime import daphne_tuning\n"
        "daphne_tuning.VERIFIED['daphne'] = ('0.1',)\n"
        "import quikday.asgi\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "quikday.settings"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "TuningOutdated: realtime.daphne_tuning patches daphne as of 0.1" in done.stderr


async def test_a_lean_queue_hands_items_over_in_order_to_whoever_waits():
    import asyncio

    queue = daphne_tuning.LeanQueue()
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    queue.put_nowait("connect")
    queue.put_nowait("receive")
    assert await waiting == "connect"
    assert queue.qsize() == 1
    assert await queue.get() == "receive"
    assert queue.empty()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


async def test_a_cancelled_get_leaves_its_item_to_the_next_getter():
    """Daphne cancels an application that outlives its socket; the item must not be lost with it."""
    import asyncio

    queue = daphne_tuning.LeanQueue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("message")  # wakes the first getter ...
    first.cancel()  # ... which is cancelled before it runs
    assert await second == "message"
    assert first.cancelled()


def test_daphne_gives_each_application_a_lean_queue():
    """Under Daphne (daphne.server imported first), create_application is the patched copy."""
    script = (
        "import daphne.server\n"
        "from realtime import daphne_tuning\n"
        "import quikday.asgi\n"
        "assert daphne.server.Server.create_application.realtime_tuned\n"
        "print('ok')\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "quikday.settings"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
