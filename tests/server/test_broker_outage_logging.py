"""server.broker_outage_logging, as settings.LOGGING installs it on Celery's and kombu's loggers.

The real outage, through a real worker and redis-server, is in tests/runs/test_redis_restart_e2e.py
and tests/scenarios/test_redis_outage_e2e.py; these hold the filter's other promises.
"""

from __future__ import annotations

import logging

import pytest
import redis.exceptions

from server.broker_outage_logging import BrokerOutageFilter

LOST = "consumer: Connection to broker lost. Trying to re-establish the connection..."
RETRY = "consumer: Cannot connect to %s: %s.\n%s\n"


def record(name, level, msg, *args, exc=None):
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def retry():
    return record(
        "celery.worker.consumer.consumer", logging.ERROR, RETRY, "redis://x", "refused", "Trying again"
    )


@pytest.fixture
def passes():
    outage = BrokerOutageFilter()
    return outage.filter


def test_retries_during_an_outage_are_dropped_until_the_broker_is_back(passes):
    assert passes(record("celery.worker.consumer.consumer", logging.WARNING, "%s (%r)", LOST, "err"))
    assert not passes(retry())
    assert not passes(retry())
    assert passes(record("celery.worker.consumer.connection", logging.INFO, "Connected to %s", "redis://x"))
    assert passes(record("celery.worker.consumer.consumer", logging.WARNING, "%s (%r)", LOST, "err"))
    assert not passes(retry())


def test_a_worker_that_never_connected_says_so_once_as_a_warning(passes):
    first = retry()
    assert passes(first)
    assert (first.levelno, first.levelname) == (logging.WARNING, "WARNING")
    assert not passes(retry())


def test_an_ack_on_a_lost_connection_is_one_info_line_without_traceback(passes):
    lost = record(
        "celery.worker.request",
        logging.CRITICAL,
        "Couldn't ack %r, reason:%r",
        7,
        "err",
        exc=redis.exceptions.ConnectionError("closed"),
    )
    assert passes(lost)
    assert (lost.levelno, lost.exc_info) == (logging.INFO, None)
    assert "skipped: the broker connection it came on was lost" in lost.getMessage()


def test_an_ack_failing_for_another_reason_stays_critical_with_its_traceback(passes):
    other = record(
        "celery.worker.request", logging.CRITICAL, "Couldn't ack %r, reason:%r", 7, "err", exc=KeyError("tag")
    )
    assert passes(other)
    assert other.levelno == logging.CRITICAL and other.exc_info is not None


def test_only_celerys_cancel_on_connection_loss_warning_is_dropped(passes):
    cancel = "x.py:1: CPendingDeprecationWarning: \n worker_cancel_long_running_tasks_on_connection_loss"
    assert not passes(record("py.warnings", logging.WARNING, "%s", cancel))
    assert passes(record("py.warnings", logging.WARNING, "%s", "x.py:1: DeprecationWarning: other"))


def test_settings_install_one_filter_on_every_logger_that_writes_the_lines():
    from django.conf import settings

    loggers = settings.LOGGING["loggers"]
    names = ["celery.worker.consumer.consumer", "celery.worker.consumer.connection", "celery.worker.request"]
    assert all(loggers[name]["filters"] == ["broker_outage"] for name in [*names, "py.warnings"])
    shared = {
        id(next(f for f in logging.getLogger(name).filters if isinstance(f, BrokerOutageFilter)))
        for name in names
    }
    assert len(shared) == 1  # one instance: the outage seen on one logger is known on the others
