"""What a log line looks like: the emoji-led text line, the JSON line, and secret redaction.

Lifecycle lines (see observability.record) carry their fields as ``extra``:
``event`` (startup, connect, disconnect, frame, poll, stats, state) and e.g.
``run_id``, ``conn_id``, ``mode``. The text formatter puts the event's emoji
in front of the message (LOG_EMOJI=0 leaves it out); the JSON formatter
writes the same fields as keys. Every line passes ``RedactSecrets`` and is
redacted once more as formatted (each JSON field before encoding), so a token
in an exception's traceback or in an extra field is caught too.
"""

from __future__ import annotations

import logging
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from observability.redaction import redact

EMOJI = {
    "startup": "🔌",
    "connect": "🔗",
    "disconnect": "🔗",
    "frame": "📨",
    "poll": "🔄",
    "stats": "📊",
    "state": "📝",
    "error": "❌",
    # Beyond the old system's seven: transport trouble and its end.
    "failover": "⚠️",
    "resync": "⚠️",
    "recovery": "✅",
}
TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(marker)s%(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


def event_of(record: logging.LogRecord) -> str | None:
    event = getattr(record, "event", None)
    if event is None and record.levelno >= logging.ERROR:
        return "error"
    return event


class RedactSecrets(logging.Filter):
    """Renders the message (and traceback) and removes tokens, passwords, tickets and keys."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call still logs, as logging would
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            # The redacted text replaces exc_info: formatters print exc_text then.
            record.exc_text, record.exc_info = redact(record.exc_text), None
        return True


class LifecycleFormatter(logging.Formatter):
    """``2026-12-01 10:00:00,001 [4242] INFO quikday.lifecycle: 🔗 connect run=… conn=… mode=push``."""

    def __init__(self, fmt: str = TEXT_FORMAT, datefmt: str | None = None, *, emoji: bool = True) -> None:
        super().__init__(fmt, datefmt)
        self.emoji = emoji

    def format(self, record: logging.LogRecord) -> str:
        marker = EMOJI.get(event_of(record) or "", "") if self.emoji else ""
        record.marker = f"{marker} " if marker else ""
        return redact(super().format(record))


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: time, level, logger, process, message, event and its fields."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level", "name": "logger"})
        kwargs.setdefault("reserved_attrs", [*RESERVED_ATTRS, "marker"])
        super().__init__(JSON_FIELDS, *args, **kwargs)

    def add_fields(self, log_data: dict, record: logging.LogRecord, message_dict: dict) -> None:
        super().add_fields(log_data, record, message_dict)
        event = event_of(record)
        if event is not None:
            log_data["event"] = event

    def process_log_record(self, log_data: dict) -> dict:
        # Field by field, before encoding: a pass over the encoded line could cut an escape.
        return {key: redact(value) if isinstance(value, str) else value for key, value in log_data.items()}


def logging_config(*, level: str, levels: list[str], log_format: str, emoji: bool) -> dict[str, Any]:
    """The LOGGING setting: one console handler, text or JSON, every line redacted."""
    formatter = (
        {"()": "observability.logs.JsonLineFormatter"}
        if log_format == "json"
        else {"()": "observability.logs.LifecycleFormatter", "emoji": emoji}
    )
    loggers: dict[str, dict[str, Any]] = {"django.db.backends": {"level": "WARNING"}}
    for pair in levels:
        name, _, value = pair.partition("=")
        if name.strip() and value.strip():
            loggers[name.strip()] = {"level": value.strip().upper()}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "observability.logs.RedactSecrets"}},
        "formatters": {"line": formatter},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "line", "filters": ["redact"]}
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": loggers,
    }
