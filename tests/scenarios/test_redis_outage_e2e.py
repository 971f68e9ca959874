"""Redis stopped for 10 s in the middle of several runs, and restarted empty.

Everything real and the test's own: a redis-server (no persistence, as an add-on
without it), Daphne, the Procfile's worker and beat. Clients watch every run
over WebSockets from seq 0. Checked: every run ends succeeded; every client gets
every event exactly once and in order, then 1000; runs created while Redis was
down (their message never sent) and runs whose message died with Redis are
dispatched again by the take-over sweep; the web log holds no traceback.
"""

import asyncio
import json
import time
import urllib.request

import pytest
from django.utils import timezone
from websockets.asyncio.client import connect

from runs.models import Run
from tests.processes import celery_beat, daphne_server, procfile_worker, subprocess_env
from tests.realtime.own_redis import OwnRedis
from tests.scenarios.test_e2e import read_frames
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]

OUTAGE_SECONDS = 10
STEPS = [{"tool": "wait", "args": {"seconds": 1}} for _ in range(6)]


def create_run(server, token) -> str:
    request = urllib.request.Request(
        f"{server.url}/api/runs/",
        data=json.dumps({"steps": STEPS}).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        return json.loads(response.read())["id"]


async def watch(server, token, run_id) -> tuple[list[dict], int | None]:
    frames: list[dict] = []
    url = f"{server.ws_url}/ws/runs/{run_id}/?since=0"
    async with connect(url, additional_headers={"Authorization": f"Token {token}"}, open_timeout=30) as ws:
        code = await read_frames(ws, frames)
    return frames, code


def closing_connection(fn, *args, **kwargs):
    """``fn`` on this (worker) thread, its database connection closed after."""
    from django.db import connection

    try:
        return fn(*args, **kwargs)
    finally:
        connection.close()


def check_every_event_once(frames: list[dict], run_id: str) -> None:
    assert frames[0]["type"] == "connected"
    events = frames[1:]
    seqs = [frame["seq"] for frame in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # every seq once, in order, from 1
    assert events[-1]["type"] == "run_completed" and events[-1]["payload"]["status"] == "succeeded"
    assert len(events) == 2 + 2 * len(STEPS), [f["type"] for f in events]
    assert all(frame["run_id"] == run_id for frame in frames)


def check_broker_outage_logged_once(log: str) -> None:
    assert "Traceback" not in log, log[log.find("Traceback") - 500 :][:4000]
    for level in (" ERROR ", " CRITICAL "):
        assert level not in log, log[log.find(level) - 500 :][:4000]
    assert "PendingDeprecationWarning" not in log, log
    assert log.count("Connection to broker lost") == 1, log[-4000:]
    after = log.partition("Connection to broker lost")[2]
    assert after.count("Connected to redis://") == 1, log[-4000:]


def test_redis_restarted_empty_mid_runs_loses_nothing(token):
    redis = OwnRedis()
    redis.start()
    try:
        env = subprocess_env(
            REDIS_URL=redis.url,
            CELERY_BROKER_URL=redis.url,
            RUNS_TAKEOVER_INTERVAL_SECONDS="2",
            REALTIME_POLL_INTERVAL="0.5",
            REALTIME_PUBLISH_TIMEOUT="0.5",
            WORKER_CONCURRENCY="3",
        )
        with daphne_server(env=env) as web, procfile_worker(env=env) as worker, celery_beat(env=env):
            before = [create_run(web, token) for _ in range(3)]

            async def scenario():
                watchers = [asyncio.create_task(watch(web, token, run_id)) for run_id in before]

                def all_mid_run():
                    return (
                        Run.objects.filter(id__in=before, steps__index=1, steps__status="running").count()
                        == 3
                    )

                await asyncio.to_thread(
                    closing_connection, wait_for, all_mid_run, what="every run to be mid-run"
                )
                redis.stop()
                stopped = time.monotonic()
                during = [await asyncio.to_thread(create_run, web, token) for _ in range(2)]
                watchers += [asyncio.create_task(watch(web, token, run_id)) for run_id in during]
                await asyncio.sleep(OUTAGE_SECONDS - (time.monotonic() - stopped))  # the outage itself
                redis.start()  # empty: no persistence
                restarted_at.append(timezone.now())
                results = await asyncio.gather(*watchers)
                return before + during, results

            restarted_at: list = []
            run_ids, results = asyncio.run(scenario())
            for run_id, (frames, code) in zip(run_ids, results, strict=True):
                assert code == 1000, (run_id, frames[-3:])
                check_every_event_once(frames, run_id)
            assert set(Run.objects.filter(id__in=run_ids).values_list("status", flat=True)) == {"succeeded"}
            # The runs created during the outage (never enqueued) start within a few sweeps of Redis' return.
            started = Run.objects.filter(id__in=run_ids[3:]).values_list("started_at", flat=True)
            delays = [(moment - restarted_at[0]).total_seconds() for moment in started]
            assert max(delays) < 15, delays
            print(f"runs created during the outage started {min(delays):.1f}-{max(delays):.1f} s after Redis")
            assert worker.alive()
            # One warning when the outage starts, one line when it ends; no traceback every second.
            web_log = web.log()
            assert "Traceback" not in web_log, web_log[web_log.find("Traceback") - 500 :][:4000]
            assert web_log.count("channel layer unreachable") == 1, web_log[-4000:]
            assert web_log.count("channel layer is back") == 1, web_log[-4000:]
            # The worker too: one WARNING when it loses the broker, one line when it is back; the
            # acknowledgement of a run that ran across the outage is no CRITICAL traceback, and
            # Celery's retries ("Cannot connect ... Trying again") are no ERROR line each.
            check_broker_outage_logged_once(worker.log())
            # No credential in any log line of the whole run.
            for log in (web_log, worker.log()):
                assert token not in log
    finally:
        redis.stop()
