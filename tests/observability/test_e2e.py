"""Metrics, logs and the staff page of real runs: two Daphne processes and a Celery worker
sharing one multiprocess directory, clients on the `websockets` library.

/metrics is read before and after; each counter must move by exactly what the run
did, summed over both web processes and the worker's pool. The logs of all three
processes must show the run's whole lifecycle and contain neither the API token
nor the staff password that went through them.
"""

import asyncio
import json
import re
import signal
import time
import urllib.parse
import urllib.request

import pytest
from websockets.asyncio.client import connect

from tests.observability.support import delta, samples, value
from tests.processes import celery_worker, daphne_server, subprocess_env
from tests.scenarios.test_e2e import THREE_ECHOES, check_run_of_three, create_run, open_client, read_frames

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]

WAIT = 60.0  # a bound on waiting for something that must happen, not a timing assertion
METRICS_TOKEN = "metrics-e2e-token-5a1b2c3d4e5f"
STAFF_PASSWORD = "pw-root-123"  # tests/conftest.py's staff_user


def _get(server, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{server.url}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def scrape(server) -> list:
    status, body = _get(server, "/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert status == 200, body
    return samples(body.decode())


async def until(check, what: str):
    """Poll ``check()`` (blocking, in a thread) until it returns something truthy."""
    deadline = time.monotonic() + WAIT
    while True:
        result = await asyncio.to_thread(check)
        if result:
            return result
        assert time.monotonic() < deadline, f"not {what} within {WAIT:g}s"
        await asyncio.sleep(0.05)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _cookies(response) -> dict[str, str]:
    found = {}
    for header in response.headers.get_all("Set-Cookie") or []:
        name, _, rest = header.partition("=")
        found[name] = rest.split(";", 1)[0]
    return found


def staff_login(server, username: str, password: str) -> dict[str, str]:
    """Sign in through the admin's login form, as a browser does; return the Cookie header.

    (The cookies are Secure with DEBUG off, so a cookie jar would not send them over http.)
    """
    with urllib.request.urlopen(f"{server.url}/admin/login/", timeout=WAIT) as response:
        csrf_cookie = _cookies(response)["csrftoken"]
        csrf = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', response.read()).group(1).decode()
    body = urllib.parse.urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": csrf, "next": "/admin/"}
    ).encode()
    request = urllib.request.Request(
        f"{server.url}/admin/login/",
        data=body,
        headers={"Cookie": f"csrftoken={csrf_cookie}", "Referer": f"{server.url}/admin/login/"},
    )
    try:
        urllib.request.build_opener(_NoRedirect).open(request, timeout=WAIT)
        raise AssertionError("the login form did not redirect: wrong password?")
    except urllib.error.HTTPError as redirect:
        assert redirect.code == 302 and redirect.headers["Location"] == "/admin/", redirect.code
        session = _cookies(redirect)["sessionid"]
    return {"Cookie": f"sessionid={session}"}


def env_for(tmp_path, **overrides):
    return subprocess_env(
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
        METRICS_TOKEN=METRICS_TOKEN,
        OBSERVABILITY_REPORT_INTERVAL="0.2",
        LOG_STATS_INTERVAL="1",
        LOG_LEVELS="quikday.frames=DEBUG",
        **overrides,
    )


async def test_one_run_moves_each_counter_by_what_it_did_over_two_web_processes(token, staff_user, tmp_path):
    text_env = env_for(tmp_path)
    json_env = env_for(tmp_path, LOG_FORMAT="json")
    with daphne_server(text_env) as web_a, daphne_server(json_env) as web_b:
        before = scrape(web_a)
        run_id = await create_run(web_a, token, THREE_ECHOES)
        frames = {"a": [], "b": []}
        async with (
            open_client(web_a, run_id, token) as ws_a,
            open_client(web_b, run_id, token, since=0) as ws_b,
        ):
            for key, ws in (("a", ws_a), ("b", ws_b)):
                frames[key].append(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))
            # Both sockets open, one per process: the sum over the two processes.
            during = scrape(web_b)
            assert delta(before, during, "quikday_websockets_open", mode="push") == 2

            # A client that puts credentials in a query string: Daphne logs every HTTP URI.
            for server in (web_a, web_b):
                assert _get(server, f"/healthz?token={token}&ticket={token}")[0] == 200
            # The staff page (signed in through the form: the password crosses web_a) lists the run.
            staff = await asyncio.to_thread(staff_login, web_a, staff_user.username, STAFF_PASSWORD)

            def run_listed():
                status, body = _get(web_a, "/admin/realtime/status.json", staff)
                assert status == 200, body
                data = json.loads(body)
                return next((r for r in data["runs"] if r["run_id"] == run_id and r["sockets"] == 2), None)

            entry = await until(run_listed, "listed on the staff page with its two sockets")
            assert entry["modes"] == {"push": 2} and len(entry["processes"]) == 2

            with celery_worker(text_env, concurrency=2) as worker:
                codes = await asyncio.gather(read_frames(ws_a, frames["a"]), read_frames(ws_b, frames["b"]))

                def all_counted():
                    found = scrape(web_a)
                    done = delta(before, found, "quikday_websocket_disconnects_total", code="1000") == 2
                    # Frames reach /metrics on each process's next report (batched, see record.flush).
                    flushed = delta(before, found, "quikday_frames_sent_total", kind="live") >= 16
                    return (
                        found
                        if done and flushed and value(found, "quikday_run_duration_seconds_count")
                        else None
                    )

                after = await until(all_counted, "both disconnects and the run's end counted")

                def worker_seen():
                    _, page = _get(web_a, "/admin/realtime/status.json", staff)
                    return [w["name"] for w in json.loads(page)["workers"] if w["name"].startswith("test-")]

                await until(worker_seen, "the worker listed on the staff page")
                worker_log = worker.log()
        async with connect(
            f"{web_b.ws_url}/ws/runs/00000000-0000-0000-0000-000000000000/?since=0&token={token}",
            additional_headers={"Authorization": f"Token {token}"},
            open_timeout=WAIT,
        ) as missing:
            await read_frames(missing, [])
        assert missing.close_code == 4404
        refused = await until(
            lambda: (
                (found := scrape(web_b))
                and delta(after, found, "quikday_websocket_disconnects_total", code="4404") == 1
                and found
            ),
            "the refusal counted",
        )
        logs = {"a": web_a.log(), "b": web_b.log(), "worker": worker_log}

    assert codes == [1000, 1000]
    check_run_of_three(frames["a"], run_id)
    assert [f["type"] for f in frames["b"]][1:] == [f["type"] for f in frames["a"]][1:]

    # --- Each counter moved by exactly what the run did --------------------------------
    expected = {
        ("quikday_websocket_connects_total", (("mode", "push"),)): 2,
        ("quikday_websocket_disconnects_total", (("code", "1000"),)): 2,
        ("quikday_websockets_open", (("mode", "push"),)): 0,
        ("quikday_events_total", (("type", "run_status"),)): 1,
        ("quikday_events_total", (("type", "step_started"),)): 3,
        ("quikday_events_total", (("type", "step_succeeded"),)): 3,
        ("quikday_events_total", (("type", "run_completed"),)): 1,
        ("quikday_events_total", ()): 8,
        ("quikday_frames_sent_total", (("kind", "live"),)): 16,  # 8 events to each of 2 sockets
        ("quikday_frames_sent_total", (("kind", "control"),)): 2,  # the two `connected`
        ("quikday_frames_sent_total", (("kind", "replay"),)): 0,
        ("quikday_commit_to_send_seconds_count", ()): 16,
        ("quikday_run_duration_seconds_count", (("status", "succeeded"),)): 1,
        ("quikday_step_duration_seconds_count", (("status", "succeeded"), ("tool", "echo"))): 3,
        ("quikday_runs", (("status", "succeeded"),)): 1,
        ("quikday_runs", (("status", "queued"),)): 0,
        ("quikday_publish_failures_total", ()): 0,
        ("quikday_failovers_total", ()): 0,
        ("quikday_poll_queries_total", ()): 0,  # push: no polling at all
    }
    moved = {key: delta(before, after, key[0], **dict(key[1])) for key in expected}
    assert moved == expected
    assert delta(before, after, "quikday_poll_queries_per_connection_total") > 0
    assert value(after, "quikday_poll_queries_avoided") > 0
    assert value(after, "quikday_celery_queue_length") == 0
    assert value(after, "quikday_celery_broker_up") == 1
    assert 0 < value(after, "quikday_commit_to_send_seconds_sum") < 16 * 5
    memory_pids = {s[1]["pid"] for s in after if s[0] == "quikday_process_resident_memory_bytes"}
    assert {str(web_a.pid), str(web_b.pid)} <= memory_pids
    roles = {s[1]["role"] for s in after if s[0] == "quikday_process_resident_memory_bytes"}
    assert {"web", "worker", "worker-child"} <= roles
    # The refusal: one more connect and disconnect, with its close code and an error frame.
    assert delta(after, refused, "quikday_websocket_connects_total", mode="push") == 1
    assert delta(after, refused, "quikday_websocket_disconnects_total", code="4404") == 1

    # --- The logs: the whole lifecycle, in web (text and JSON) and worker -----------------
    text = logs["a"]
    assert "🔌 Quik.day Realtime, full stack mode" in text
    (connect_line,) = [line for line in text.splitlines() if "🔗 connect" in line and run_id in line]
    conn_id = re.search(r"conn_id=(\S+)", connect_line).group(1)
    (disconnect_line,) = [
        line for line in text.splitlines() if f"🔗 disconnect run_id={run_id} conn_id={conn_id}" in line
    ]
    assert re.search(r"code=1000 duration=\d+\.\d{3}s frames=9$", disconnect_line), disconnect_line
    frame_lines = [line for line in text.splitlines() if "📨 frame" in line and conn_id in line]
    assert len(frame_lines) == 9  # connected and the 8 events, at DEBUG
    assert "📊 stats role=web" in text
    assert "❌" not in text

    json_lines = [json.loads(line) for line in logs["b"].splitlines() if line.startswith("{")]
    assert len(json_lines) == len([line for line in logs["b"].splitlines() if line.strip()]), logs["b"]
    (connected,) = [j for j in json_lines if j.get("event") == "connect" and j.get("run_id") == run_id]
    (closed,) = [
        j for j in json_lines if j.get("event") == "disconnect" and j.get("conn_id") == connected["conn_id"]
    ]
    assert (closed["code"], closed["frames"], closed["mode"]) == (1000, 9, "push")
    assert any(j.get("event") == "disconnect" and j.get("code") == 4404 for j in json_lines)
    assert any(j.get("event") == "stats" and j.get("role") == "web" for j in json_lines)
    assert any(j.get("event") == "startup" for j in json_lines)

    worker_text = logs["worker"]
    assert "🔌 Quik.day Realtime worker ready" in worker_text
    states = re.findall(rf"📝 (\w+) run_id={run_id} seq=(\d+)", worker_text)
    assert states == [
        ("run_status", "1"),
        ("step_started", "2"),
        ("step_succeeded", "3"),
        ("step_started", "4"),
        ("step_succeeded", "5"),
        ("step_started", "6"),
        ("step_succeeded", "7"),
        ("run_completed", "8"),
    ]
    assert re.search(
        rf"📝 run_completed run_id={run_id} seq=8 status=succeeded duration=\d+\.\d{{3}}s", worker_text
    )

    # --- No secret anywhere ---------------------------------------------------------------
    assert '"GET /healthz?token=[redacted]&ticket=[redacted]" 200' in logs["a"]
    access = [j for j in json_lines if j.get("event") == "access" and "healthz" in j["request"]]
    assert access and access[0]["request"] == "GET /healthz?token=[redacted]&ticket=[redacted]"
    for name, log in logs.items():
        assert token not in log, name
        assert STAFF_PASSWORD not in log, name
        assert METRICS_TOKEN not in log, name


async def test_a_killed_web_processs_open_sockets_leave_the_sum_and_its_counts_stay(token, tmp_path):
    env = env_for(tmp_path)
    with daphne_server(env) as survivor, daphne_server(env) as doomed:
        before = scrape(survivor)
        run_id = await create_run(survivor, token, THREE_ECHOES)  # no worker: it stays queued
        async with open_client(survivor, run_id, token) as ws_1, open_client(doomed, run_id, token) as ws_2:
            for ws in (ws_1, ws_2):
                await asyncio.wait_for(ws.recv(), WAIT)
            assert delta(before, scrape(survivor), "quikday_websockets_open", mode="push") == 2
            doomed.kill(signal.SIGKILL)
            after = scrape(survivor)
            assert delta(before, after, "quikday_websockets_open", mode="push") == 1
            assert delta(before, after, "quikday_websocket_connects_total", mode="push") == 2
            assert str(doomed.pid) not in {
                s[1].get("pid") for s in after if s[0] == "quikday_process_resident_memory_bytes"
            }


async def test_poll_mode_counts_its_queries_rows_and_what_they_saved(token, tmp_path):
    env = env_for(tmp_path, REALTIME_MODE="poll", REALTIME_POLL_INTERVAL="0.1")
    with daphne_server(env) as web:
        before = scrape(web)
        run_id = await create_run(web, token, THREE_ECHOES)
        frames: list[dict] = []
        async with open_client(web, run_id, token) as ws:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))
            with celery_worker(env):
                code = await read_frames(ws, frames)

        def counted():
            found = scrape(web)
            done = delta(before, found, "quikday_websocket_disconnects_total", mode="poll", code="1000") == 1
            return (
                found
                if done and delta(before, found, "quikday_frames_sent_total", kind="live") >= 8
                else None
            )

        after = await until(counted, "the poll-mode socket's end counted")
        log = web.log()
    assert code == 1000
    check_run_of_three(frames, run_id)
    assert delta(before, after, "quikday_poll_rows_total") == 8  # each event read once: one watcher
    assert delta(before, after, "quikday_frames_sent_total", kind="live") == 8
    queries = delta(before, after, "quikday_poll_queries_total")
    assert queries >= 1
    assert delta(before, after, "quikday_poll_ticks_total") == queries
    assert delta(before, after, "quikday_poll_runs_total") == queries  # one run per query
    assert delta(before, after, "quikday_websockets_open", mode="poll") == 0
    # 🔄 at INFO for the polls that found events, with how many rows each.
    rows = [int(n) for n in re.findall(r"🔄 poll runs=1 watchers=1 rows=(\d+) time=\d+\.\dms", log)]
    assert sum(rows) == 8, log
