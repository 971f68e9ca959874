"""A run id and ``?since=`` are judged alike over HTTP and WebSocket (realtime/protocol/params.py).

Python's int() takes ``1_0``, Arabic-Indic digits and padding; uuid.UUID()
takes upper case, braces and no hyphens. Over HTTP ``since=1_0`` was a 200
while the socket refused it; an upper-case run id was a 404 over HTTP and a
stream over the socket. Through a real Daphne: tests/scenarios/test_params_daphne.py.
"""

import pytest

from realtime.protocol.params import ParamError, parse_run_id, parse_whole_number
from runs import services
from runs.validation import MAX_INTEGER_DIGITS

pytestmark = pytest.mark.django_db

# Each: a ?since= value refused on both transports (percent-encoded as a client sends it).
BAD_SINCE = [
    "1_0",
    "%D9%A1",  # ARABIC-INDIC DIGIT ONE
    "%C2%B2",  # ², SUPERSCRIPT TWO: isdigit() says yes, int() says no
    "%EF%BC%91",  # FULLWIDTH DIGIT ONE
    "+1",
    "-1",
    "%201",
    "1.5",
    "abc",
    "9" * (MAX_INTEGER_DIGITS + 1),
]


@pytest.fixture
def run(user, dispatched):
    return services.run_create(owner=user, steps=[{"tool": "echo", "args": {"n": 1}}])


@pytest.mark.parametrize("since", BAD_SINCE)
def test_the_events_api_refuses_a_since_that_is_not_ascii_digits_in_range(api, run, since):
    response = api.get(f"/api/runs/{run.id}/events/?since={since}")
    assert response.status_code == 400, response.content
    assert response.json()["message"] == "since: since must be a non-negative whole number"


# Past the log's last seq is another history (recovered: false), not an error: tests/scenarios/test_resume.py.
@pytest.mark.parametrize("since", ["0", "1", "007", str(2**63), "9" * MAX_INTEGER_DIGITS])
def test_the_events_api_takes_a_since_in_ascii_digits(api, run, since):
    response = api.get(f"/api/runs/{run.id}/events/?since={since}")
    assert response.status_code == 200, response.content
    assert response.json()["since"] == int(since)


@pytest.mark.parametrize("limit", ["0", "1001", "1_0", "%D9%A1", "9" * 5000])
def test_the_events_api_refuses_a_limit_out_of_range_or_not_ascii(api, run, limit):
    response = api.get(f"/api/runs/{run.id}/events/?limit={limit}")
    assert response.status_code == 400, response.content
    assert response.json()["message"] == "limit: limit must be a whole number from 1 to 1000"


def test_an_upper_case_run_id_is_refused_over_http(api, run):
    assert api.get(f"/api/runs/{str(run.id).upper()}/events/").status_code == 404
    assert api.get(f"/api/runs/{run.id}/events/").status_code == 200


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not-a-uuid", "the run id is not a UUID"),
        ("9" * 5000, "the run id is not a UUID"),
        ("0123ABCD-0000-4000-8000-000000000000", "the run id must be a UUID in lowercase with hyphens"),
        ("{0123abcd-0000-4000-8000-000000000000}", "the run id must be a UUID in lowercase with hyphens"),
        ("0123abcd000040008000000000000000", "the run id must be a UUID in lowercase with hyphens"),
        ("urn:uuid:0123abcd-0000-4000-8000-000000000000", "the run id must be a UUID in lowercase"),
    ],
)
def test_a_run_id_is_its_canonical_form_only(text, message):
    with pytest.raises(ParamError, match=message):
        parse_run_id(text)
    assert str(parse_run_id("0123abcd-0000-4000-8000-000000000000")) == "0123abcd-0000-4000-8000-000000000000"


def test_a_whole_number_is_ascii_digits_within_its_bounds():
    assert parse_whole_number("0", name="since") == 0
    assert parse_whole_number("9" * MAX_INTEGER_DIGITS, name="since") == int("9" * MAX_INTEGER_DIGITS)
    for text in ["", " 1", "1 ", "1\n", "\u0661", "\u00b2", "1_0", "-0", "9" * (MAX_INTEGER_DIGITS + 1)]:
        with pytest.raises(ParamError, match=r"^since must be a non-negative whole number$"):
            parse_whole_number(text, name="since")
