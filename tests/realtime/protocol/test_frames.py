"""realtime.protocol.frames: one timestamp format, one frame builder, for every producer of frames."""

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

from django.conf import settings

from realtime.protocol import frames


def test_a_timestamp_is_utc_with_microseconds_always():
    moment = datetime(2026, 11, 27, 17, 7, 59, tzinfo=timezone(timedelta(hours=1)))
    assert frames.format_ts(moment) == "2026-11-27T16:07:59.000000Z"
    assert frames.format_ts(moment.replace(microsecond=123)) == "2026-11-27T16:07:59.000123Z"


def test_the_api_and_the_poll_query_use_the_same_format():
    assert settings.REST_FRAMEWORK["DATETIME_FORMAT"] == frames.TS_FORMAT
    assert frames.TS_FORMAT_POSTGRES == 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


def test_a_frame_from_a_datetime_equals_one_from_its_formatted_text():
    run_id = uuid.uuid4()
    moment = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    common = {"type": frames.STEP_STARTED, "run_id": run_id, "seq": 3, "payload": {"step": {"index": 0}}}
    built = frames.build_frame(ts=moment, **common)
    assert built == frames.build_frame(ts=frames.format_ts(moment), **common)
    assert built == {
        "type": "step_started",
        "run_id": str(run_id),
        "seq": 3,
        "ts": "2026-01-02T03:04:05.000006Z",
        "payload": {"step": {"index": 0}},
    }


def test_frames_are_compact_ascii_json():
    frame = frames.build_frame(type="pong", run_id="", seq=0, ts="t", payload={"text": "é✓", "n": [1, 2]})
    text = frames.encode_frame(frame)
    expected = '{"type":"pong","run_id":"","seq":0,"ts":"t","payload":{"text":"\\u00e9\\u2713","n":[1,2]}}'
    assert text == expected
    assert json.loads(text) == frame


def test_only_run_completed_ends_a_stream():
    assert [t for t in frames.EVENT_TYPES if frames.is_final(t)] == [frames.RUN_COMPLETED]


def test_a_runs_group_name_does_not_depend_on_how_its_id_is_spelled():
    run_id = uuid.uuid4()
    assert frames.group_name(run_id) == frames.group_name(str(run_id).upper()) == f"run.{run_id.hex}"
