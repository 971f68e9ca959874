"""/metrics (who may read it, what it shows) and the admin's Realtime page, in process."""

import pytest
from django.urls import reverse

from observability import record, reporter, status
from tests.observability.support import delta, samples, value

pytestmark = pytest.mark.django_db

METRICS_TOKEN = "metrics-token-for-tests-0123456789"


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = METRICS_TOKEN
    return METRICS_TOKEN


def scrape(client, token=METRICS_TOKEN):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def test_metrics_refuses_anonymous_and_a_wrong_token(client, metrics_token):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Token {METRICS_TOKEN}").status_code == 401


def test_metrics_refuses_bearer_auth_when_no_token_is_configured(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


def test_metrics_answers_staff_sessions_and_not_other_users(client, staff_user, user):
    client.force_login(user)
    response = client.get("/metrics")
    assert response.status_code == 403 and response.json()["error"] == "forbidden"
    client.force_login(staff_user)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"quikday_websockets_open" in response.content


def test_the_hooks_move_their_counters_by_one(client, metrics_token):
    before = scrape(client)
    conn = record.socket_opened(mode="poll", run_id="r-1")
    during = scrape(client)
    frame = '{"type":"run_status","run_id":"r-1","seq":1,"ts":"2026-12-01T10:00:00.000000Z","payload":{}}'
    record.frame_sent(conn, "live", frame)
    record.frame_sent(conn, "control", "{}")
    record.socket_closed(conn, 1000)
    record.socket_closed(conn, 1000)  # once only
    record.poll_tick(runs=3, watchers=4, rows=5, seconds=0.002)
    record.transport_changed(None, run_id="r-1", degraded=True)
    record.transport_changed(None, run_id="r-1", degraded=False)
    record.slow_client_resync(None, run_id="r-1", dropped=7)
    record.publish_failed()
    record.publish_retried(outcome="published")
    after = scrape(client)
    assert delta(before, during, "quikday_websockets_open", mode="poll") == 1
    assert delta(before, after, "quikday_websockets_open", mode="poll") == 0
    assert delta(before, after, "quikday_websocket_connects_total", mode="poll") == 1
    assert delta(before, after, "quikday_websocket_disconnects_total", mode="poll", code="1000") == 1
    assert delta(before, after, "quikday_frames_sent_total", kind="live") == 1
    assert delta(before, after, "quikday_frames_sent_total", kind="control") == 1
    assert delta(before, after, "quikday_commit_to_send_seconds_count") == 1
    assert delta(before, after, "quikday_poll_queries_total") == 1
    assert delta(before, after, "quikday_poll_rows_total") == 5
    assert delta(before, after, "quikday_poll_runs_total") == 3
    assert delta(before, after, "quikday_failovers_total") == 1
    assert delta(before, after, "quikday_recoveries_total") == 1
    assert delta(before, after, "quikday_slow_client_resyncs_total") == 1
    assert delta(before, after, "quikday_publish_failures_total") == 1
    assert delta(before, after, "quikday_publish_retries_total", outcome="published") == 1


class _Event:
    def __init__(self, type, payload, seq=1):
        self.run_id, self.seq, self.type, self.payload = "r-2", seq, type, payload


def test_committed_events_count_by_type_and_time_runs_and_steps(client, metrics_token, caplog):
    before = scrape(client)
    step = {"index": 0, "tool": "echo", "status": "succeeded", "started_at": "2026-12-01T10:00:00.000000Z",
            "finished_at": "2026-12-01T10:00:00.250000Z"}  # fmt: skip
    with caplog.at_level("INFO", logger="quikday.lifecycle"):
        record.event_committed(_Event("step_succeeded", {"step": step}, seq=3))
        record.event_committed(
            _Event("run_completed", {"status": "succeeded", "started_at": "2026-12-01T10:00:00.000000Z",
                                     "finished_at": "2026-12-01T10:00:02.000000Z"}, seq=4)
        )  # fmt: skip
    after = scrape(client)
    assert delta(before, after, "quikday_events_total", type="step_succeeded") == 1
    assert delta(before, after, "quikday_events_total", type="run_completed") == 1
    assert delta(before, after, "quikday_step_duration_seconds_count", status="succeeded", tool="echo") == 1
    # A difference of two float sums: equal to 0.25 only within rounding.
    duration_sum = delta(before, after, "quikday_step_duration_seconds_sum", status="succeeded", tool="echo")
    assert duration_sum == pytest.approx(0.25)
    assert delta(before, after, "quikday_run_duration_seconds_sum", status="succeeded") == pytest.approx(2.0)
    lines = [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "state"]
    assert lines == [
        "step_succeeded run_id=r-2 seq=3 step=0 tool=echo status=succeeded duration=0.250s",
        "run_completed run_id=r-2 seq=4 status=succeeded duration=2.000s",
    ]


def test_runs_by_status_are_read_at_scrape(client, metrics_token, user, dispatched):
    from runs import services

    before = scrape(client)
    for _ in range(2):
        services.run_create(owner=user, steps=[{"tool": "echo", "args": {}}])
    after = scrape(client)
    assert value(after, "quikday_runs", status="queued") == value(before, "quikday_runs", status="queued") + 2
    assert value(after, "quikday_runs", status="succeeded") == 0


@pytest.mark.redis
def test_the_queue_depth_is_read_at_scrape(client, metrics_token, settings):
    import redis

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    broker.delete(queue)
    broker.rpush(queue, "a", "b", "c")
    try:
        after = scrape(client)
    finally:
        broker.delete(queue)
        broker.close()
    assert value(after, "quikday_celery_queue_length", queue=queue) == 3
    assert value(after, "quikday_celery_broker_up") == 1


def test_the_realtime_page_is_for_staff_only(client, staff_user, user):
    page = reverse("observability-realtime")
    data = reverse("observability-realtime-status")
    anonymous = client.get(page)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    assert client.get(data).status_code == 401
    client.force_login(user)
    refused = client.get(page)
    assert refused.status_code == 302 and "/admin/login/" in refused["Location"]
    assert client.get(data).status_code == 403
    assert client.get(data).json()["error"] == "forbidden"
    client.force_login(staff_user)
    response = client.get(page)
    assert response.status_code == 200
    assert data.encode() in response.content and b"observability/realtime.js" in response.content
    index = client.get("/admin/")
    assert page.encode() in index.content  # linked from the admin index


def test_the_status_json_lists_the_runs_this_process_watches(client, staff_user, settings):
    started = reporter.start("web")
    conn = record.socket_opened(mode="hybrid", run_id="run-watched")
    try:
        started.report()
        client.force_login(staff_user)
        data = client.get(reverse("observability-realtime-status")).json()
    finally:
        record.socket_closed(conn, 1000)
    (entry,) = [run for run in data["runs"] if run["run_id"] == "run-watched"]
    assert entry["sockets"] == 1 and entry["modes"] == {"hybrid": 1}
    # The layer's health: Redis answers on the full stack; embedded, the layer is this process's.
    layer = "ok" if settings.REDIS_URL else "in-memory (this process)"
    assert data["database"] == "ok" and data["channel_layer"] == layer
    assert data["sockets"].get("hybrid", 0) >= 1
    assert any(p["pid"] == started.pid for p in data["processes"])
    assert status.hash_key().endswith(":processes")


@pytest.mark.redis  # its Celery panels read the broker's metrics, which exist only with one
def test_the_grafana_dashboard_reads_only_metrics_that_exist(client, metrics_token):
    import json
    import re
    from pathlib import Path

    dashboard = json.loads(
        (Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json").read_text()
    )
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for expr in exprs
        for name in re.findall(r"quikday_\w+", expr)
    }
    exposed = {re.sub(r"_(bucket|sum|count|created)$", "", name) for name, _, _ in scrape(client)}
    assert used and used <= exposed, used - exposed
    titles = " ".join(panel["title"] for panel in dashboard["panels"])
    for figure in ("latency", "queries avoided", "memory", "Frames sent"):
        assert figure.lower() in titles.lower()


def test_batched_frame_latencies_land_in_the_right_buckets(client, metrics_token):
    from datetime import UTC, datetime, timedelta

    before = scrape(client)
    conn = record.socket_opened(mode="push", run_id="r-3")
    ts = (datetime.now(UTC) - timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for seq in (1, 2, 3):
        record.frame_sent(conn, "live", f'{{"type":"step_started","run_id":"r-3","seq":{seq},"ts":"{ts}"}}')
    record.socket_closed(conn, 1000)
    after = scrape(client)
    assert delta(before, after, "quikday_commit_to_send_seconds_count") == 3
    assert delta(before, after, "quikday_commit_to_send_seconds_bucket", le="10.0") == 0
    assert delta(before, after, "quikday_commit_to_send_seconds_bucket", le="30.0") == 3
    assert 60 <= delta(before, after, "quikday_commit_to_send_seconds_sum") < 75
    assert delta(before, after, "quikday_frames_sent_total", kind="live") == 3


def test_a_run_list_socket_counts_as_mode_list_and_watches_no_run(client, metrics_token, staff_user):
    before = scrape(client)
    started = reporter.start("web")
    conn = record.socket_opened(mode="list", run_id=None)
    try:
        assert delta(before, scrape(client), "quikday_websockets_open", mode="list") == 1
        started.report()
        client.force_login(staff_user)
        data = client.get(reverse("observability-realtime-status")).json()
    finally:
        record.socket_closed(conn, 1000)
    assert all(run["run_id"] != "-" for run in data["runs"])
    assert data["sockets"].get("list", 0) >= 1
    assert delta(before, scrape(client), "quikday_websocket_disconnects_total", mode="list", code="1000") == 1
