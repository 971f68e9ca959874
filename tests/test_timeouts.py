"""The suite's timeout really ends a hung test, and a hung session, with the project's pytest.ini.

A test file that hangs three ways (the asyncio loop, a lock in the main thread,
a worker thread awaited through sync_to_async) runs in a pytest of its own with
a 2 s timeout, serially and on a pytest-xdist worker (as `make test` runs):
each hang fails as a timeout, the test after them still runs, and the run exits
(a stuck worker thread ended by tests/plugin.py's watchdog, or on xdist with the
worker process by the controller) rather than hanging after its summary.
"""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

HANGING = """
import asyncio
import threading

from asgiref.sync import sync_to_async


async def test_hangs_in_the_event_loop():
    await asyncio.Event().wait()


def test_hangs_on_a_lock():
    threading.Event().wait()


async def test_hangs_in_a_worker_thread():
    await sync_to_async(threading.Event().wait)()


def test_after_the_hangs_still_runs():
    pass
"""


# `make test` runs the suite on pytest-xdist workers: each worker is a pytest session
# whose tests run in its main thread, so the same timeout must fail a hang there, and
# the run must end all the same.
# One worker: its hangs and the test after them share one worker session.
@pytest.mark.parametrize("workers", [pytest.param([], id="serial"), pytest.param(["-n", "1"], id="xdist")])
@pytest.mark.timeout(300)
def test_a_hung_test_fails_by_timeout_and_the_run_still_ends(tmp_path, workers):
    hanging = tmp_path / "test_hanging.py"
    hanging.write_text(HANGING)
    env = {**os.environ, "QUIKDAY_TEST_EXIT_GRACE": "2"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(hanging),
            "-c",
            str(ROOT / "pytest.ini"),
            "--rootdir",
            str(ROOT),
            "-p",
            "no:cacheprovider",
            "-o",
            "timeout=2",
            "-q",
            f"--junitxml={tmp_path / 'report.xml'}",
            *workers,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        # The hangs take 3 x 2 s, the watchdog 2 s (xdist's kill 10 s), the rest is the start-up of
        # pytest and Django in each process, which a loaded machine (mutation runs beside) stretches.
        timeout=240,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    failures = {
        case.get("name"): [failure.get("message", "") for failure in case.iter("failure")]
        for case in ET.parse(tmp_path / "report.xml").getroot().iter("testcase")
    }
    timed_out = ["Failed: Timeout (>2.0s) from pytest-timeout."]
    assert failures == {
        "test_hangs_in_the_event_loop": timed_out,
        "test_hangs_on_a_lock": timed_out,
        "test_hangs_in_a_worker_thread": timed_out,
        "test_after_the_hangs_still_runs": [],
    }, out
    if not workers:
        assert "threads still running 2s after the session; ending it" in out, out
    # On xdist, the worker with the stuck thread is ended by the controller (execnet kills
    # a worker not gone 10 s after the session): the run ended, as subprocess.run's timeout says.
