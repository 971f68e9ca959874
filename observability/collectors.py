"""Figures read at scrape time, once per scrape rather than per process: runs by status,
the Celery queue's depth, and which reaches into other libraries are unverified.

Both reads are bounded: the status count is one grouped query on an indexed
column, the queue depth one LLEN with a short socket timeout; a failure
leaves the figure out of that scrape (and says so in its ``_up`` gauge).
"""

from __future__ import annotations

import logging

from django.conf import settings
from prometheus_client.core import GaugeMetricFamily

from runs import selectors
from server import upstream

logger = logging.getLogger(__name__)

BROKER_TIMEOUT = 0.5


class ScrapeCollector:
    """A prometheus-client collector: ``collect()`` yields metric families."""

    def collect(self):
        yield from self._runs_by_status()
        yield from self._queue_depth()
        yield self._upstream_reaches()

    def _upstream_reaches(self):
        """Every reach of server.upstream, 1 when the installed library is not the one it was
        read against (a speed reach is then skipped, a correctness one applied unverified)."""
        gauge = GaugeMetricFamily(
            "quikday_upstream_reach_unverified",
            "1 when a patch or private access of another library (server.upstream) is not verified on "
            "the installed release: skipped (speed) or applied unverified (correctness).",
            labels=["reach", "package", "kind"],
        )
        problems = upstream.review()  # the processes of a host share one install
        for name, reach in upstream.REACHES.items():
            gauge.add_metric([name, reach.package, reach.kind], 0 if problems[name] is None else 1)
        return gauge

    def _runs_by_status(self):
        runs = GaugeMetricFamily("quikday_runs", "Runs in each status now.", labels=["status"])
        try:
            counts = selectors.run_counts_by_status()
        except Exception as error:  # noqa: BLE001 - a scrape shows what it can
            logger.warning("metrics: runs by status unavailable: %s", error)
            return
        for status, count in sorted(counts.items()):
            runs.add_metric([status], count)
        yield runs

    def _queue_depth(self):
        broker = settings.CELERY_BROKER_URL
        if (
            not broker
            or settings.RUNS_EXECUTOR != "celery"
            or not broker.startswith(("redis://", "rediss://"))
        ):
            return
        queue = settings.CELERY_TASK_DEFAULT_QUEUE
        depth = GaugeMetricFamily(
            "quikday_celery_queue_length",
            "Runs waiting in the Celery queue (LLEN on the broker).",
            labels=["queue"],
        )
        up = GaugeMetricFamily("quikday_celery_broker_up", "1 when the broker answered this scrape's LLEN.")
        import redis

        client = redis.Redis.from_url(
            broker, socket_connect_timeout=BROKER_TIMEOUT, socket_timeout=BROKER_TIMEOUT
        )
        try:
            depth.add_metric([queue], client.llen(queue))
            up.add_metric([], 1)
            yield depth
        except Exception as error:  # noqa: BLE001
            logger.warning("metrics: the broker did not answer LLEN %s: %s", queue, error)
            up.add_metric([], 0)
        finally:
            client.close()
        yield up
