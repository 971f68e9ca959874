"""Log lines: emoji or not, JSON with the same fields, and no secret in any of them."""

import io
import json
import logging

import pytest

from observability import record
from observability.logs import JsonLineFormatter, LifecycleFormatter, RedactSecrets, logging_config
from observability.redaction import REDACTED, redact, remember_secrets

TOKEN = "b4ce817778b70fe465c354f2e2a14422aa204a44"


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Token {TOKEN}",
        f"headers=[(b'authorization', b'Token {TOKEN}')]",
        f"Bearer {TOKEN}",
        f"GET /ws/runs/1/?since=0&ticket={TOKEN}",
        f"GET /ws/runs/1/?token={TOKEN}&since=3",
        f"password={TOKEN}",
        f'{{"password": "{TOKEN}", "user": "alice"}}',
        f"{{'auth_token': '{TOKEN}'}}",
        f"postgres://postgres:{TOKEN}@db.example.com:5432/quikday",
        f"csrfmiddlewaretoken={TOKEN}&username=alice",
    ],
)
def test_each_kind_of_secret_is_redacted(text):
    cleaned = redact(text)
    assert TOKEN not in cleaned
    assert REDACTED in cleaned


def test_ordinary_text_is_left_alone():
    text = "connect run_id=65e85722-1 conn_id=4821-3 mode=push since=5 auth=key"
    assert redact(text) == text


def test_the_deployments_own_secrets_are_removed_wherever_they_appear():
    remember_secrets(["s3cr3t-value-of-the-deploy"])
    try:
        assert "s3cr3t" not in redact("odd place: xs3cr3t-value-of-the-deployx")
    finally:
        remember_secrets([])


def _emit(formatter: logging.Formatter, level=logging.INFO, msg="hello %s", args=("world",), **extra):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactSecrets())
    log = logging.getLogger(f"test.observability.{id(formatter)}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.log(level, msg, *args, extra=extra or None)
    return stream.getvalue()


def test_a_lifecycle_line_starts_with_its_emoji_and_the_emoji_can_be_turned_off():
    on = _emit(LifecycleFormatter(emoji=True), msg="%s %s", args=("connect", "run_id=1"), event="connect")
    off = _emit(LifecycleFormatter(emoji=False), msg="%s %s", args=("connect", "run_id=1"), event="connect")
    assert ": 🔗 connect run_id=1" in on
    assert ": connect run_id=1" in off and "🔗" not in off


def test_errors_get_the_cross_and_their_traceback_is_redacted():
    try:
        raise RuntimeError(f"could not connect with Authorization: Token {TOKEN}")
    except RuntimeError:
        import sys

        exc_info = sys.exc_info()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LifecycleFormatter())
    handler.addFilter(RedactSecrets())
    log = logging.getLogger("test.observability.errors")
    log.handlers[:] = [handler]
    log.propagate = False
    log.error("publish failed for %s", f"ticket={TOKEN}", exc_info=exc_info)
    text = stream.getvalue()
    assert ": ❌ publish failed for ticket=[redacted]" in text
    assert "Traceback" in text and "RuntimeError" in text
    assert TOKEN not in text


def test_json_lines_carry_the_same_fields():
    text = _emit(
        JsonLineFormatter(),
        msg="%s %s",
        args=("disconnect", "run_id=r1 code=1000"),
        event="disconnect",
        run_id="r1",
        conn_id="7-1",
        code=1000,
    )
    assert text.count("\n") == 1
    data = json.loads(text)
    assert data["event"] == "disconnect"
    assert (data["run_id"], data["conn_id"], data["code"]) == ("r1", "7-1", 1000)
    assert data["message"] == "disconnect run_id=r1 code=1000"
    assert {"time", "level", "logger", "process"} <= set(data)


def test_json_lines_are_redacted_too():
    text = _emit(
        JsonLineFormatter(),
        msg="login with password=%s",
        args=(TOKEN,),
        event="connect",
        query=f"token={TOKEN}",
    )
    assert TOKEN not in text
    assert json.loads(text)["event"] == "connect"


def test_logging_config_picks_the_formatter_and_extra_levels():
    config = logging_config(
        level="INFO", levels=["quikday.frames=debug", "bad"], log_format="json", emoji=True
    )
    assert config["formatters"]["line"]["()"].endswith("JsonLineFormatter")
    assert config["loggers"]["quikday.frames"] == {"level": "DEBUG"}
    assert config["handlers"]["console"]["filters"] == ["redact"]
    text = logging_config(level="INFO", levels=[], log_format="text", emoji=False)
    assert text["formatters"]["line"] == {"()": "observability.logs.LifecycleFormatter", "emoji": False}


def test_record_line_renders_fields_and_passes_them_as_extra(caplog):
    with caplog.at_level(logging.INFO, logger="quikday.lifecycle"):
        record.line(logging.INFO, "poll", "poll", runs=2, rows=5, skipped=None)
    (entry,) = [r for r in caplog.records if r.name == "quikday.lifecycle"]
    assert entry.getMessage() == "poll runs=2 rows=5"
    assert (entry.event, entry.runs, entry.rows) == ("poll", 2, 5)


def test_redaction_never_breaks_an_escaped_json_string():
    encoded = json.dumps(
        {"message": f'"GET /healthz?ticket={TOKEN}" 200', "auth": f"Authorization: Token {TOKEN}"}
    )
    assert TOKEN not in redact(encoded)
    assert json.loads(redact(encoded))["message"] == '"GET /healthz?ticket=[redacted]" 200'
