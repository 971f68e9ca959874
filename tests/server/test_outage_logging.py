"""server.outage_logging, as settings.LOGGING installs it: channels-redis' repeats of a failure
to reach Redis are dropped; its other errors, and records without an exception, are kept.

Logged through channels-redis' own loggers, the way its receive loop logs (an
``exception()`` inside the ``except``), so the filter is checked where it is
configured, not only as a class.
"""

import logging

import pytest
import redis.exceptions

LAYER_LOGGERS = ["channels_redis.pubsub", "channels_redis.core"]


def _log_while_handling(error: BaseException, logger: str) -> None:
    try:
        raise error
    except BaseException:
        logging.getLogger(logger).exception("Unexpected exception in receive task")


def _caused_by(cause: BaseException) -> BaseException:
    """An error raised ``from`` a connection failure (``__cause__``), outside any ``except``."""
    error = RuntimeError("the receive task failed (test)")
    error.__cause__ = cause
    return error


def _raised_while_handling(context: BaseException) -> BaseException:
    """An error raised while a connection failure was being handled (``__context__`` only)."""
    try:
        try:
            raise context
        except BaseException:
            raise RuntimeError("the receive task failed (test)")  # no `from`: only __context__ is set
    except RuntimeError as error:
        return error


@pytest.mark.parametrize("logger", LAYER_LOGGERS)
@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        OSError(113, "No route to host"),
        TimeoutError("timed out"),
        redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        _caused_by(redis.exceptions.ConnectionError("down")),
        _raised_while_handling(ConnectionResetError(104, "Connection reset by peer")),
    ],
    ids=["refused", "oserror", "timeout", "redis-connection", "redis-timeout", "cause", "context"],
)
def test_a_failure_to_reach_redis_is_not_logged_by_the_layer(caplog, logger, error):
    with caplog.at_level(logging.DEBUG, logger=logger):
        _log_while_handling(error, logger)
    assert [record.getMessage() for record in caplog.records] == []


@pytest.mark.parametrize("logger", LAYER_LOGGERS)
def test_any_other_error_of_the_layer_is_logged_with_its_traceback(caplog, logger):
    with caplog.at_level(logging.DEBUG, logger=logger):
        _log_while_handling(_caused_by(ValueError("a bad message (test)")), logger)
        logging.getLogger(logger).warning("a warning without an exception (test)")
    assert [record.getMessage() for record in caplog.records] == [
        "Unexpected exception in receive task",
        "a warning without an exception (test)",
    ]
    assert "ValueError: a bad message (test)" in caplog.text  # with its traceback
