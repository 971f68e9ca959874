"""The connection's state machine (realtime.sockets.stream) on its own: its transitions and its one end.

A stand-in endpoint records what the machine asks of it (the poll interval, the
releases, the frames); the registries are not involved. The protocol through
real sockets is tests/realtime/sockets/test_consumer.py, test_guarantees.py and
tests/scenarios/.
"""

import asyncio

import pytest

from realtime.delivery import front_door
from realtime.sockets.stream import Policy, State, Stream


class _Socket:
    def __init__(self) -> None:
        self.sent: list[tuple] = []

    async def _error(self, code: str, message: str) -> None:
        self.sent.append(("error", code, message))

    async def close(self, code: int) -> None:
        self.sent.append(("close", code))


class _Stream(Stream):
    """A stream whose endpoint notes its poll interval and its releases."""

    def __init__(self, policy: Policy, *, joins: bool = True) -> None:
        super().__init__(_Socket(), policy=policy)
        self.joins, self.polled_every, self.releases, self.catch_ups = joins, "never", 0, 0

    async def resubscribe(self) -> bool:
        return self.joins

    async def caught_up(self) -> None:
        self.catch_ups += 1

    def _sync_poll(self) -> None:
        if self.following and not self.closed:
            self.polled_every = self.policy.poll_interval(layer_down=self.layer_down)

    async def release(self) -> None:
        self.releases += 1

    async def _resync_when_drained(self) -> None:
        await asyncio.Event().wait()  # until cancelled: the test says when it has drained


@pytest.fixture(autouse=True)
def no_probe(monkeypatch):
    monkeypatch.setattr(front_door, "layer_suspected", lambda: None)


PUSH = Policy(mode="push", push=True, live_poll_interval=None)
HYBRID = Policy(mode="hybrid", push=True, live_poll_interval=10.0)
POLL = Policy(mode="poll", push=False, live_poll_interval=2.0)


def test_the_policy_of_each_mode(settings):
    settings.REALTIME_POLL_INTERVAL, settings.REALTIME_FALLBACK_INTERVAL = 2.0, 10.0
    assert [Policy.of_mode(mode) for mode in ("push", "hybrid", "poll")] == [PUSH, HYBRID, POLL]
    assert PUSH.poll_interval(layer_down=True) == 2.0 and HYBRID.poll_interval(layer_down=False) == 10.0


async def test_a_push_stream_goes_live_then_polls_while_the_layer_is_down_then_is_live_again(settings):
    settings.REALTIME_POLL_INTERVAL = 2.0
    stream = _Stream(HYBRID)
    assert stream.state is State.CONNECTING and not stream.following
    stream.went_live()
    assert (stream.state, stream.polled_every) == (State.LIVE, 10.0)
    stream.on_layer_down()
    assert (stream.state, stream.polled_every, stream.degraded) == (State.POLLING, 2.0, True)
    assert await stream.on_layer_up()
    assert (stream.state, stream.polled_every, stream.degraded) == (State.LIVE, 10.0, False)
    assert stream.catch_ups == 1  # what the poller had not brought yet, from the log


async def test_a_stream_whose_layer_failed_while_connecting_starts_polling(settings):
    settings.REALTIME_POLL_INTERVAL = 2.0
    stream = _Stream(PUSH)
    stream.on_layer_down()
    stream.went_live()
    assert (stream.state, stream.polled_every) == (State.POLLING, 2.0)
    stream.joins = False  # the layer is still down: it stays on the poller
    assert not await stream.on_layer_up()
    assert (stream.state, stream.degraded) == (State.POLLING, True)


async def test_a_poll_stream_polls_and_a_layer_coming_back_does_not_make_it_live():
    stream = _Stream(POLL)
    stream.went_live()
    assert (stream.state, stream.polled_every) == (State.POLLING, 2.0)
    assert await stream.on_layer_up()
    assert stream.state is State.POLLING


async def test_a_stream_that_fell_behind_comes_back_as_the_layer_left_it():
    """The layer failed while it was resyncing: it comes back polling, not live."""
    stream = _Stream(PUSH)
    stream.went_live()
    stream.fell_behind()
    resync = stream.resync
    assert stream.state is State.RESYNCING and stream.following
    stream.on_layer_down()
    assert stream.state is State.RESYNCING
    stream.resynced()  # what its resync task does once the client has drained
    assert stream.state is State.POLLING
    resync.cancel()


async def test_a_transition_the_machine_does_not_make_is_refused():
    stream = _Stream(PUSH)
    with pytest.raises(RuntimeError):
        stream.resynced()  # connecting → live | polling only by went_live
    stream.went_live()
    with pytest.raises(RuntimeError):
        stream.went_live()


async def test_close_sends_its_code_once_and_releases_once_however_often_it_is_called():
    stream = _Stream(PUSH)
    stream.went_live()
    stream.fell_behind()
    resync = stream.resync
    await stream.close(4401, error="the credentials were revoked")
    await stream.close(1000)
    await stream.close()
    await asyncio.sleep(0)
    assert stream.socket.sent == [("error", "4401", "the credentials were revoked"), ("close", 4401)]
    assert stream.releases == 1 and stream.closed and resync.cancelled()
    stream.on_layer_down()  # a closed stream changes no more
    assert stream.state is State.CLOSED and not stream.degraded


async def test_a_lost_client_gets_no_close_frame_but_the_stream_is_still_released():
    stream = _Stream(PUSH)
    stream.went_live()
    stream.lost()
    await stream.close(1000)
    assert stream.socket.sent == [] and stream.releases == 1
