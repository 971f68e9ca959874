"""A worker's log while its broker (Redis) is away: one WARNING, then one line when it is back.

Left alone, Celery and kombu log an outage as:

- Celery's "Connection to broker lost" WARNING (kept: the one warning), then an
  ERROR "Cannot connect to …  Trying again in N seconds" at every retry;
- kombu's CRITICAL "Couldn't ack" with a traceback for each task that ran across
  the outage: its message came from the connection that died, so it cannot be
  acknowledged. Nothing is lost by that: Redis keeps the unacknowledged message
  and delivers it again after the visibility timeout (the run is finished by
  then, and executing a finished run does nothing), or Redis came back empty
  and there is nothing to acknowledge;
- Celery's "Connected to redis://…" INFO when it is back (kept: the recovery line);
- and at every outage, a "py.warnings" WARNING of a dozen lines: Celery 6 will cancel the
  tasks running when the connection drops. Ours keep running (Celery 5's default, this
  project's choice: a run's steps and events go to PostgreSQL, not the broker; Celery 6 will
  need ``worker_cancel_long_running_tasks_on_connection_loss = False``). Dropped.

``BrokerOutageFilter`` is installed by settings.LOGGING on the loggers that write
those lines (one instance shared by all of them, so it knows whether an outage is
in progress, and on "py.warnings"): the retries are dropped while the outage is already reported (the
first failure of a worker that never connected stays, as a WARNING: it may be a
wrong URL), and a failed acknowledgement for a lost connection becomes one INFO
line without a traceback. It reads the libraries' message texts, registered in
server.upstream ("celery-broker-outage-lines", "kombu-ack-failure-line"); if they change, the lines are
simply logged as the libraries wrote them.
"""

from __future__ import annotations

import logging

import redis.exceptions
from kombu.exceptions import OperationalError

LOST = "Connection to broker lost"
RETRY = "consumer: Cannot connect to %s"
RECOVERED = "Connected to %s"
ACK_FAILED = "Couldn't ack %r, reason:%r"
CANCEL_WARNING = "worker_cancel_long_running_tasks_on_connection_loss"

_CONNECTION_FAILURES = (
    ConnectionError,
    OSError,
    TimeoutError,
    OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


class BrokerOutageFilter(logging.Filter):
    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.outage = False

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.msg if isinstance(record.msg, str) else ""
        if record.name == "py.warnings":
            return CANCEL_WARNING not in record.getMessage()
        if text.startswith(RECOVERED):
            self.outage = False
        elif LOST in text or (record.args and LOST in str(record.args[0])):
            self.outage = True
        elif text.startswith(RETRY):
            if self.outage:
                return False
            self.outage = True
            _demote(record, logging.WARNING)
        elif text == ACK_FAILED and _lost_connection(record):
            record.msg = "ack of %r skipped: the broker connection it came on was lost (%r)"
            record.exc_info = None
            record.exc_text = None
            _demote(record, logging.INFO)
        return True


def _demote(record: logging.LogRecord, level: int) -> None:
    record.levelno = level
    record.levelname = logging.getLevelName(level)


def _lost_connection(record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    while error is not None:
        if isinstance(error, _CONNECTION_FAILURES):
            return True
        error = error.__cause__ or error.__context__
    return False
