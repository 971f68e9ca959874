"""Hostile WebSocket clients through a real Daphne (issue 21): unrouted paths, control-frame floods,
oversized frames. Each case ends in a documented close code, and Daphne's log stays free of tracebacks."""

import asyncio

import pytest

from tests.scenarios.test_protocol_daphne import assert_clean_log, make_run, refused

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]


def assert_no_error_lines(server) -> None:
    log = server.log()
    errors = [line for line in log.splitlines() if " ERROR " in line or line.startswith("ERROR")]
    assert not errors, log[-4000:]


def test_an_unrouted_path_is_refused_4404_without_an_error(daphne_process, user, token):
    # Issue 21 #6: URLRouter raised "No route found", Daphne logged a traceback and answered 500.
    run = make_run(user)
    server = daphne_process
    paths = ["/ws/nope/", f"/ws/runs/{run.id}", "/ws/runs", "/ws/runs/a/b/", "/"]

    async def scenario():
        outcomes = []
        for path in paths:
            for kwargs in ({}, {"token": token}):
                frames, close = await refused(server, path, **kwargs)
                outcomes.append((path, close, [(f["type"], f["payload"]) for f in frames]))
        return outcomes

    message = "no such endpoint: the streams are /ws/runs/ and /ws/runs/<run id>/"
    for path, close, frames in asyncio.run(scenario()):
        assert (close, frames) == (4404, [("error", {"code": "4404", "message": message})]), path
    assert_clean_log(server)
    assert_no_error_lines(server)
