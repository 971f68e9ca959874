"""realtime.daphne_tuning: autobahn's debug arguments are lazy and render the same text."""

from pprint import pformat

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
