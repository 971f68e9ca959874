"""server.upstream: every reach into another library's internals, and the guard they share.

The first test is the one CI fails the day an installed release is not one a
reach was read against, or what a reach relies on changed. The others hold the
guard's promise: a speed reach on an unverified release is skipped with one
WARNING line, a gauge in /metrics and a line on the Realtime page; a
correctness one is reported the same way; and the web command still starts
and serves WebSockets (the failure issue 20 found: autobahn 26.11.1 stopped
every web process).
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from django.urls import reverse
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import connect

from runs import services
from server import upstream
from tests.processes import ROOT, subprocess_env, web_servers
from tests.realtime.support import logged_frames
from tests.waiting import WAIT

REACHES = sorted(upstream.REACHES)
# Releases no reach was read against: what a buildpack got the day of issue 20, and the like.
NEWER = {
    "daphne": "4.3.0",
    "Twisted": "27.1.0",
    "kombu": "5.8.0",
    "celery": "5.8.0",
    "channels_redis": "4.4.0",
    "prometheus_client": "0.27.0",
    "Django": "5.3.0",
    "channels": "4.4.0",
    "autobahn": "26.11.1",
}
PRETEND_NEWER = ",".join(f"{package}={version}" for package, version in NEWER.items())


@pytest.fixture
def pretend(monkeypatch):
    """Make the guard see the given releases installed (and review again, before and after)."""

    def see(versions: str) -> None:
        monkeypatch.setenv(upstream.PRETEND_VERSIONS_ENV, versions)
        upstream.forget()

    upstream.forget()
    yield see
    monkeypatch.delenv(upstream.PRETEND_VERSIONS_ENV, raising=False)
    upstream.forget()


@pytest.mark.parametrize("name", REACHES)
def test_every_reach_is_verified_on_the_installed_release(name):
    """Red in CI when an upgrade brings a release the reach was not read against, or changes what it
    relies on: re-read the reach against it, then record the release (and any hash) in server.upstream."""
    assert upstream.verify(upstream.REACHES[name]) is None


@pytest.mark.parametrize("name", REACHES)
def test_each_reach_is_named_where_it_is_used(name):
    reach = upstream.REACHES[name]
    path = ROOT / reach.used_by.split()[0]
    assert path.is_file(), reach.used_by
    assert f'"{name}"' in path.read_text(), f"{path} does not name the reach it relies on"
    assert reach.kind in (upstream.SPEED, upstream.CORRECTNESS)
    assert reach.package in NEWER


@pytest.mark.parametrize("name", REACHES)
def test_a_release_it_was_not_read_against_is_a_problem(name, pretend):
    reach = upstream.REACHES[name]
    pretend(f"{reach.package}={NEWER[reach.package]}")
    assert upstream.problem(reach) == (
        f"read against {reach.package} {', '.join(reach.read_against)}, "
        f"{reach.package} {NEWER[reach.package]} is installed"
    )


@pytest.mark.parametrize(
    "name, read", [(name, read) for name in REACHES for read in upstream.REACHES[name].reads]
)
def test_a_changed_upstream_source_is_a_problem(name, read, monkeypatch):
    """Each thing a reach reads of its package, renamed or rewritten, turns the reach red."""
    real = upstream.source_of

    def rewritten(where):
        source = real(where)
        if where != read.where:
            return source
        if read.contains is not None:
            return source.replace(read.contains, "something else")
        return None if read.sha256 is None else source + "\n# a changed line"

    monkeypatch.setattr(upstream, "source_of", rewritten)
    found = upstream.verify(upstream.REACHES[name])
    assert found is not None and read.where in found
    monkeypatch.setattr(upstream, "source_of", lambda where: None if where == read.where else real(where))
    assert upstream.verify(upstream.REACHES[name]) == f"{read.where} no longer exists"


def test_an_unverified_speed_reach_is_skipped_and_a_correctness_one_applied_each_logged_once(pretend, caplog):
    pretend("daphne=4.3.0")
    with caplog.at_level(logging.WARNING, logger="server.upstream"):
        assert upstream.usable("daphne-application-queue") is False
        assert upstream.usable("daphne-close-handshake") is True  # what it relies on is still there
        assert upstream.usable("kombu-redis-connparams") is True  # verified
        upstream.review()
    lines = [record.getMessage() for record in caplog.records]
    daphne_reaches = [name for name in REACHES if upstream.REACHES[name].package == "daphne"]
    assert len(lines) == len(daphne_reaches), lines  # one line per unverified reach, however often asked
    assert (
        "upstream reach daphne-application-queue (speed, server/daphne_tuning.py lean_application_queues) "
        "skipped: read against daphne 4.2, daphne 4.3.0 is installed"
    ) in lines
    assert any(line.startswith("upstream reach daphne-access-log (correctness") for line in lines)
    assert all(
        "applied unverified (CI fails on this release)" in line for line in lines if "(correctness" in line
    )


def test_a_correctness_reach_on_another_release_without_what_it_relies_on_is_not_applied(
    pretend, monkeypatch
):
    real = upstream.source_of
    monkeypatch.setattr(
        upstream, "source_of", lambda where: None if "AccessLogGenerator" in where else real(where)
    )
    pretend("daphne=4.3.0")
    from server import access_log

    assert upstream.usable("daphne-access-log") is False
    assert access_log.route_through_logging() is False


def test_unverified_reaches_are_in_metrics_and_on_the_realtime_page(pretend, client, staff_user, settings):
    settings.METRICS_TOKEN = "metrics-token-for-tests-0123456789"
    pretend("daphne=4.3.0,Django=5.3.0")
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}")
    assert response.status_code == 200
    gauges = {
        line.partition("{")[2].partition("}")[0]: line.rpartition(" ")[2]
        for line in response.content.decode().splitlines()
        if line.startswith("quikday_upstream_reach_unverified{")
    }
    assert gauges['kind="speed",package="daphne",reach="daphne-application-queue"'] == "1.0"
    assert gauges['kind="speed",package="Django",reach="django-on-commit-queue"'] == "1.0"
    assert gauges['kind="correctness",package="daphne",reach="daphne-access-log"'] == "1.0"
    assert gauges['kind="correctness",package="kombu",reach="kombu-redis-connparams"'] == "0.0"
    assert len(gauges) == len(REACHES)

    client.force_login(staff_user)
    listed = {
        entry["reach"]: entry
        for entry in client.get(reverse("observability-realtime-status")).json()["upstream"]
    }
    assert listed["daphne-application-queue"]["action"] == "skipped"
    assert listed["django-on-commit-queue"]["action"] == "skipped"
    assert listed["daphne-close-handshake"]["action"] == "applied"
    assert listed["daphne-close-handshake"]["problem"] == "read against daphne 4.2, daphne 4.3.0 is installed"
    assert "kombu-redis-connparams" not in listed
    assert 'id="rt-upstream"' in client.get(reverse("observability-realtime")).content.decode()


def test_without_the_histogram_batch_the_latencies_are_observed_one_by_one(pretend, monkeypatch):
    from observability import metrics, record

    pretend("prometheus_client=0.27.0")
    tally = record._FrameTally()
    observed = []
    monkeypatch.setattr(metrics.COMMIT_TO_SEND, "observe", observed.append)
    monkeypatch.setattr(metrics.COMMIT_TO_SEND, "_buckets", None)  # not touched when skipped
    for latency in (0.002, 0.2, 20.0):
        tally.observe(latency)
    tally.flush()
    assert observed == [0.002, 0.2, 20.0]
    tally.flush()
    assert observed == [0.002, 0.2, 20.0]  # each once
    assert sum(tally.buckets) == 3  # the page's and the 📊 line's figures still counted


@pytest.mark.django_db(transaction=True)
def test_without_djangos_commit_queue_the_list_feed_publishes_per_change(pretend, monkeypatch, user):
    from realtime.runlist import list_feed

    published = []
    monkeypatch.setattr(list_feed, "publish_summary", lambda *, run_id: published.append(run_id))
    run_id = "3f1c6f5e-0000-4000-8000-000000000001"
    for seen, expected in (("", 1), ("Django=5.3.0", 2)):
        pretend(seen)
        published.clear()
        with transaction.atomic():
            list_feed.note_change(run_id=run_id)
            list_feed.note_change(run_id=run_id)
        assert published == [run_id] * expected


@pytest.mark.usefixtures("dispatched")
@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.e2e
async def test_the_web_command_starts_and_streams_on_releases_no_reach_was_read_against(user):
    """Issue 20: the Procfile's web command with every reached package (autobahn 26.11.1 among them)
    at a release no reach was read against: it starts, stays up, and a WebSocket streams a run's events."""
    token = (await sync_to_async(Token.objects.create)(user=user)).key
    run = await sync_to_async(services.run_create)(owner=user, steps=[{"tool": "echo", "args": {"n": 1}}])
    env = subprocess_env(**{upstream.PRETEND_VERSIONS_ENV: PRETEND_NEWER})
    with web_servers(env, processes=1) as server:
        url = f"{server.ws_url}/ws/runs/{run.id}/"
        async with connect(
            url, additional_headers={"Authorization": f"Token {token}"}, open_timeout=WAIT
        ) as ws:
            connected = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            assert connected["type"] == "connected" and connected["run_id"] == str(run.id)
            await sync_to_async(services.run_start)(run_id=run.id)
            logged = await logged_frames(run.id, after=connected["seq"])
            assert logged, "run_start logged no event"
            frames = [json.loads(await asyncio.wait_for(ws.recv(), WAIT)) for _ in logged]
            assert frames == logged
        log = server.log()
    assert log.count("web process 0 started") == 1, log  # never restarted
    assert "Traceback" not in log, log
    for name, reach in upstream.REACHES.items():
        if reach.package not in ("kombu",):  # the web process never reads kombu's
            assert f"upstream reach {name} ({reach.kind}, {reach.used_by})" in log, log
    skipped = (
        "upstream reach daphne-application-queue (speed, server/daphne_tuning.py lean_application_queues) "
    )
    assert f"{skipped}skipped: read against daphne 4.2, daphne 4.3.0 is installed" in log
