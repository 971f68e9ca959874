"""PostgreSQL faults through the real servers: connections terminated, the server restarted.

Each test runs its own Daphne and Celery worker. Terminating backends is done
on the test database only (never another database of the shared server); the
restart test runs a PostgreSQL cluster of its own (tests/own_postgres.py).
"""

import json
import threading
import urllib.error
import urllib.request

import pytest
from django.db import connection

from runs.models import Run
from tests.processes import celery_beat, celery_worker, daphne_server, subprocess_env
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]

STEPS = [{"tool": "echo", "args": {"n": 1}}, {"tool": "wait", "args": {"seconds": 0.2}}, {"tool": "echo"}]


def request(server, method, path, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    call = urllib.request.Request(server.url + path, data=data, method=method)
    call.add_header("Authorization", f"Token {token}")
    call.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(call, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


class Load:
    """Clients creating and listing runs on threads until stopped; every answer kept."""

    def __init__(self, server, token, clients: int = 3):
        self.server, self.token = server, token
        self.answers: list[tuple[str, int, dict, dict]] = []
        self.created: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, number: int) -> None:
        while not self.stop.is_set():
            if number == 0:
                status, headers, body = request(
                    self.server, "POST", "/api/runs/", self.token, {"steps": STEPS}
                )
                if status == 201:
                    self.created.append(body["id"])
                self.answers.append(("POST", status, headers, body))
            else:
                status, headers, body = request(self.server, "GET", "/api/runs/?status=queued", self.token)
                self.answers.append(("GET", status, headers, body))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def terminate_other_backends(keep: set[int]) -> int:
    """pg_terminate_backend every connection to the test database but ``keep``; how many."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> ALL(%s)",
            [list(keep | {connection.connection.info.backend_pid})],
        )
        return cursor.fetchone()[0]


def test_terminated_connections_give_no_500_and_leave_no_run_stuck(token):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        test_pid = cursor.fetchone()[0]
    env = subprocess_env(RUNS_TAKEOVER_INTERVAL_SECONDS="2")
    with daphne_server(env=env) as web, celery_worker(env=env, concurrency=2) as worker, celery_beat(env=env):
        with Load(web, token) as load:
            wait_for(lambda: len(load.created) >= 3, what="runs to flow")
            terminated = 0
            for _ in range(15):
                # Every backend of the servers, repeatedly, while requests and runs flow.
                before = len(load.answers)
                terminated += terminate_other_backends({test_pid})
                wait_for(lambda before=before: len(load.answers) >= before + 5, what="more answers")
        assert terminated >= 15

        statuses = [status for _, status, _, _ in load.answers]
        assert 500 not in statuses, [a for a in load.answers if a[1] >= 500][:3]
        unavailable = [a for a in load.answers if a[1] == 503]
        assert all(a[2].get("Retry-After") == "1" and a[3]["error"] == "unavailable" for a in unavailable)
        assert set(statuses) <= {200, 201, 503}, set(statuses)
        assert statuses.count(200) + statuses.count(201) > len(statuses) // 2

        def all_finished():
            return not Run.objects.filter(id__in=load.created).exclude(status="succeeded").exists()

        wait_for(all_finished, timeout=90, what="every run created under the faults to succeed")
        assert "Traceback" not in web.log(), web.log()[-3000:]
        assert worker.alive()
    print(f"{len(load.answers)} requests, {len(unavailable)} answered 503, {terminated} backends terminated")


def test_a_restarted_postgresql_gives_no_500_and_leaves_no_run_stuck():
    import subprocess
    import sys

    from tests.own_postgres import OwnPostgres
    from tests.processes import ROOT

    cluster = OwnPostgres()
    try:
        cluster.create()
        env = subprocess_env(DATABASE_URL=cluster.url(), RUNS_TAKEOVER_INTERVAL_SECONDS="2")

        def manage(*args: str) -> str:
            done = subprocess.run(
                [sys.executable, "manage.py", *args],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            return done.stdout

        manage("migrate", "--noinput")
        key = manage(
            "shell",
            "-c",
            "from django.contrib.auth.models import User; from rest_framework.authtoken.models import Token; "
            "print(Token.objects.create(user=User.objects.create_user('pg-fault')).key)",
        ).split()[-1]  # after the shell's own banner

        with (
            daphne_server(env=env) as web,
            celery_worker(env=env, concurrency=2) as worker,
            celery_beat(env=env),
        ):
            with Load(web, key) as load:
                wait_for(lambda: len(load.created) >= 3, what="runs to flow")
                for _ in range(2):
                    before = len(load.answers)
                    cluster.restart()
                    wait_for(
                        lambda before=before: len(load.answers) >= before + 10,
                        what="answers after the restart",
                    )

            statuses = [status for _, status, _, _ in load.answers]
            assert 500 not in statuses, [a for a in load.answers if a[1] >= 500][:3]
            assert set(statuses) <= {200, 201, 503}, set(statuses)

            def all_succeeded():
                done = 0
                for run_id in load.created:
                    status, _, body = request(web, "GET", f"/api/runs/{run_id}/", key)
                    done += status == 200 and body["status"] == "succeeded"
                return done == len(load.created)

            wait_for(all_succeeded, timeout=120, what="every run created across the restarts to succeed")
            assert "Traceback" not in web.log(), web.log()[-3000:]
            assert worker.alive()
        print(f"{len(load.answers)} requests across 2 restarts, {statuses.count(503)} answered 503")
    finally:
        cluster.destroy()
