"""``?since=`` and the run id through a real Daphne: refused 4400 in our own words, as over HTTP.

A 5,000-digit since closed 4400 with Python's own text ("…sys.set_int_max_str_digits()…"),
a ² with "invalid literal for int() with base 10"; ``1_0`` and Arabic-Indic digits were taken; an
upper-case run id streamed the run while HTTP answered 404 for it.
"""

import asyncio

import pytest

from tests.realtime.protocol.test_params import BAD_SINCE
from tests.scenarios.test_protocol_daphne import assert_clean_log, make_run, refused

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]


def test_a_bad_since_or_run_id_is_4400_with_our_own_message(daphne_process, user, token):
    mine = make_run(user, finished=True)
    server = daphne_process
    cases = [
        (f"/ws/runs/{mine.id}/?since={since}", "since must be a non-negative whole number")
        for since in BAD_SINCE
    ]
    cases += [
        (
            f"/ws/runs/{str(mine.id).upper()}/",
            "the run id must be a UUID in lowercase with hyphens, as the server gives it",
        ),
        (
            f"/ws/runs/{mine.id.hex}/",
            "the run id must be a UUID in lowercase with hyphens, as the server gives it",
        ),
        (f"/ws/runs/{'9' * 5000}/", "the run id is not a UUID"),
    ]

    async def scenario():
        for path, message in cases:
            frames, close = await refused(server, path, token=token)
            assert close == 4400, (path[:80], frames)
            assert [(f["type"], f["payload"]) for f in frames] == [
                ("error", {"code": "4400", "message": message})
            ], path[:80]
        # The canonical id and ASCII digits still stream the run.
        frames, close = await refused(server, f"/ws/runs/{mine.id}/?since=0", token=token)
        assert (frames[0]["type"], close) == ("connected", 1000)

    asyncio.run(scenario())
    assert_clean_log(server)
