"""Hybrid mode: the slow poll is a safety net for events that push lost in transit."""

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers

from realtime.events import publisher
from runs import executor, services
from tests.realtime.conftest import layer_config
from tests.realtime.support import (
    check_frames,
    logged_frames,
    open_socket,
    receive_until_close,
    token_headers,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("dispatched"),
]


@pytest.fixture
def hybrid(settings):
    settings.REALTIME_MODE = "hybrid"
    settings.REALTIME_POLL_INTERVAL = 0.05
    settings.REALTIME_FALLBACK_INTERVAL = 0.3
    settings.CHANNEL_LAYERS = {"default": layer_config("pubsub")}
    channel_layers.backends = {}
    yield settings
    channel_layers.backends = {}


@pytest.fixture
def dropped(monkeypatch):
    """Makes group_send drop (without an error: lost in transit) the events whose type is listed."""
    lost: list[int] = []
    drop_types: set[str] = set()
    original = publisher.group_send

    def lossy(group, message):
        if message["text"] and any(f'"type":"{kind}"' in message["text"] for kind in drop_types):
            lost.append(message["seq"])
            return
        original(group, message)

    monkeypatch.setattr(publisher, "group_send", lossy)
    return drop_types, lost


@pytest.mark.parametrize(
    "drop",
    [{"run_completed"}, {"step_started"}, {"run_status", "step_succeeded"}],
    ids=["the-last-event", "every-step-start", "many"],
)
async def test_hybrid_delivers_events_whose_publish_was_dropped(hybrid, dropped, user, token, drop):
    drop_types, lost = dropped
    drop_types.update(drop)
    run = await sync_to_async(services.run_create)(
        owner=user, steps=[{"tool": "echo", "args": {"n": i}} for i in range(3)]
    )
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    assert connected["payload"]["mode"] == "hybrid"

    await sync_to_async(executor.execute_run)(run_id=run.id)
    frames, code = await receive_until_close(ws)

    assert lost, "nothing was dropped: the test would prove nothing"
    assert code == 1000
    check_frames(frames, run_id=run.id, first_seq=1)  # each seq once, in order
    assert frames == await logged_frames(run.id)
    assert frames[-1]["type"] == "run_completed"
