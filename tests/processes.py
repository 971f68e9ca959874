"""Real processes against the test database: a Celery worker and a Daphne server.

The small, stable API other tests (and bench/) build on:

- ``subprocess_env(**overrides)``: the environment for a child process, with
  DATABASE_URL pointing at the test database pytest-django actually set up.
- ``free_port()``: a loopback TCP port nobody listens on right now.
- ``celery_worker(env=None, concurrency=1)``: context manager; yields a
  ``Worker`` once its log says "ready." (``.pid``, ``.child_pids()``,
  ``.signal(sig)`` to the main process, ``.kill(sig=SIGKILL)`` to the whole
  process group, ``.stop()``, ``.log()``).
- ``procfile_worker(env=None)``: the same, but the Procfile's ``worker`` command
  line exactly as deployed.
- ``celery_beat(env=None)``: the Procfile's ``beat`` (its own schedule file).
- ``daphne_server(env=None, port=None)``: context manager; yields a ``Server``
  once its port accepts connections (``.url``, ``.ws_url``, ``.port``,
  ``.pid``, ``.signal(sig)``, ``.kill(sig=SIGKILL)``, ``.stop()``, ``.log()``).
- ``web_servers(env=None, processes=2, port=None)``: context manager; the
  Procfile's web command (``python -m server.web_command``: several Daphne processes
  on one port); yields a ``WebServers`` once every child listens
  (``.children()`` their pids now, ``.listening()`` how many children have
  started listening so far, and what ``Server`` has).
- ``serving_pid(port, client_port, pids)``: which of ``pids`` holds the
  server side of the loopback TCP connection from ``client_port`` to ``port``.
- fixtures ``worker_process`` (a worker for one test) and ``daphne_process``
  (a Daphne shared by the tests of a module), started with default arguments;
  they need a transactional database.

Each process runs in a session of its own (so the whole tree can be killed)
and logs to a temporary file, printed to stderr when the block exits with an
exception (pytest shows it with the failure). Processes are always stopped on
exit, whatever happened, and their log files removed (read ``.log()`` inside
the block).

A test using them must commit its data for the child to see it:
``@pytest.mark.django_db(transaction=True)`` and the marks ``postgres``,
``redis`` and ``e2e``.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
_SIGKILL = signal.SIGKILL  # a default argument inside _Process, where `signal` is a method


def database_url() -> str:
    """The URL of the database Django uses now (the test database inside a test)."""
    from django.db import connection

    conf = connection.settings_dict
    if connection.vendor != "postgresql":
        raise RuntimeError("real processes need the PostgreSQL test database, not " + connection.vendor)
    user = quote(conf.get("USER") or "", safe="")
    password = quote(conf.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = conf.get("HOST") or "127.0.0.1"
    port = conf.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{quote(conf['NAME'], safe='')}"


def without_the_test_processs_own(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the settings tests/plugin.py set for the test process alone (production's defaults)."""
    for name in env.pop("QUIKDAY_TEST_PROCESS_ONLY", "").split(","):
        env.pop(name, None)
    return env


def subprocess_env(**overrides: str) -> dict[str, str]:
    """os.environ for a child process, pointed at the test database and this session's queue."""
    from django.conf import settings

    env = without_the_test_processs_own(dict(os.environ))
    env.update(
        {
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            "CELERY_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
            "SECRET_KEY": settings.SECRET_KEY,
            "DEBUG": "0",
            "SECURE_SSL_REDIRECT": "0",
            "ALLOWED_HOSTS": "localhost,127.0.0.1,testserver,[::1]",
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "quikday.settings",
        }
    )
    env.update({key: str(value) for key, value in overrides.items()})
    return env


# Under pytest-xdist, worker gw<k> takes its ports from a block of its own below the
# kernel's ephemeral range (32768+): a port handed out here is bound by the child only
# later (and a fault test's server is restarted on it), so it must not be given by
# bind(0) to another worker, nor taken by an outgoing connection, in between.
_WORKER_PORTS = 1000
_WORKER_PORTS_START = 20000
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free at the time of asking (and, under xdist, in this worker's block)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    first = _WORKER_PORTS_START + int(worker[2:]) * _WORKER_PORTS
    block = [port for port in range(first, first + _WORKER_PORTS) if port not in _handed_out]
    if not block:
        _handed_out.clear()
        block = list(range(first, first + _WORKER_PORTS))
    # From a random place: two runs on one machine (two people's) rarely meet.
    start = random.randrange(len(block))
    for port in block[start:] + block[:start]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {first}-{first + _WORKER_PORTS - 1}")


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc: psutil is not installed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


class _Process:
    """A child process started in its own session, logging to a temp file."""

    name = "process"
    _stop_signal = signal.SIGTERM

    def __init__(self, args: list[str], env: dict[str, str]):
        self.args = args
        handle, path = tempfile.mkstemp(prefix=f"quikday-{self.name}-", suffix=".log")
        self.log_path = Path(path)
        self._log_file = os.fdopen(handle, "wb")
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        """Everything the process has written so far."""
        return self.log_path.read_text(errors="replace")

    def child_pids(self) -> list[int]:
        """The process's live direct children (a prefork worker's pool processes)."""
        return _children(self.pid)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the main process only."""
        if self.alive():
            os.kill(self.pid, sig)

    def kill(self, sig: int = _SIGKILL) -> None:
        """Send ``sig`` to the whole process group (main and children); after SIGKILL, reap the main."""
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        if sig == signal.SIGKILL:
            self.popen.wait(timeout=STOP_TIMEOUT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Ask politely (SIGTERM), then SIGKILL the group; idempotent."""
        if self.alive():
            self.signal(self._stop_signal)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the tree (orphaned pool processes included) goes too.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.popen.poll() is None:
            self.popen.wait(timeout=timeout)
        self._log_file.close()

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode} before {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not {what} within {timeout:g}s")
            time.sleep(0.05)

    def dump_log(self) -> None:
        sys.stderr.write(
            f"\n----- {self.name} log ({' '.join(self.args)}) -----\n{self.log()}\n----- end -----\n"
        )


class Worker(_Process):
    """A Celery worker process (prefork pool) consuming this session's queue."""

    name = "celery-worker"
    # A cold shutdown: don't wait for a running step (the tests end runs themselves).
    _stop_signal = signal.SIGQUIT

    @property
    def node_name(self) -> str:
        """Its Celery node name (``-n``; celery@<host> by default): the worker its steps record."""
        name = self.args[self.args.index("-n") + 1] if "-n" in self.args else "celery@%h"
        return name.replace("%h", socket.gethostname())


class Server(_Process):
    """A Daphne process serving quikday.asgi."""

    name = "daphne"

    def __init__(self, args: list[str], env: dict[str, str], port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        super().__init__(args, env)

    def accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False


class WebServers(Server):
    """The web command: a parent process and its Daphne children, on one port."""

    name = "web"

    def children(self) -> list[int]:
        return self.child_pids()

    def listening(self) -> int:
        """How many Daphne children have started listening (restarts included)."""
        return self.log().count("Listening on TCP address")


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fd_dir.iterdir())
    except OSError:
        return inodes
    for entry in entries:
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def serving_pid(port: int, client_port: int, pids: list[int]) -> int | None:
    """The process of ``pids`` holding the server end of the connection client_port → port.

    Read from /proc/net/tcp (local and remote ports, socket inode) and each
    process's open descriptors: the kernel's own account, no server hook.
    """
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)
            if local == port and remote == client_port:
                inode = fields[9]
                break
        if inode is not None:
            break
    if inode is None:
        return None
    for pid in pids:
        if inode in _socket_inodes(pid):
            return pid
    return None


@contextmanager
def _running(process: _Process) -> Iterator[_Process]:
    try:
        yield process
    except BaseException:
        process.dump_log()
        raise
    finally:
        process.stop()
        process.log_path.unlink(missing_ok=True)


@contextmanager
def celery_worker(
    env: dict[str, str] | None = None,
    concurrency: int = 1,
    *,
    extra_args: tuple[str, ...] = (),
    ready_timeout: float = READY_TIMEOUT,
) -> Iterator[Worker]:
    """A real worker on $CELERY_QUEUE; yields once it is ready, stops it on exit."""
    env = subprocess_env() if env is None else env
    args = [
        str(BIN / "celery"),
        "-A",
        "quikday",
        "worker",
        "-Q",
        env["CELERY_QUEUE"],
        "-c",
        str(concurrency),
        "--pool",
        "prefork",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        f"test-{uuid.uuid4().hex[:8]}@%h",
        "-l",
        "info",
        *extra_args,
    ]
    worker = Worker(args, env)
    with _running(worker):
        worker.wait_until(lambda: "ready." in worker.log(), ready_timeout, "ready")
        yield worker


def procfile_command(process: str, env: dict[str, str] | None = None) -> list[str]:
    """The Procfile's command line for ``process`` (its ``exec`` part), ${VAR:-default} from ``env``."""
    env = {} if env is None else env
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            command = command.rpartition("&& exec ")[2] if "&& exec " in command else command
            command = re.sub(
                r"\$\{([A-Z_]+):-([^}]*)\}", lambda m: env.get(m.group(1)) or m.group(2), command
            )
            args = shlex.split(command)
            assignments = []  # NAME=value before the command: the shell's way, env(1)'s here
            while "=" in args[0]:
                assignments.append(args.pop(0))
            command_line = [str(BIN / args[0]), *args[1:]]
            return ["env", *assignments, *command_line] if assignments else command_line
    raise LookupError(f"no {process!r} process in the Procfile")


@contextmanager
def procfile_worker(
    env: dict[str, str] | None = None,
    *,
    extra_args: tuple[str, ...] = (),
    ready_timeout: float = READY_TIMEOUT,
) -> Iterator[Worker]:
    """The Procfile's ``worker`` exactly as deployed (heartbeats on), on $CELERY_QUEUE.

    ``extra_args``: appended to its command line (``-n name@%h`` tells two workers
    on one host apart, as distinct hosts are in production).
    """
    env = subprocess_env() if env is None else env
    worker = Worker([*procfile_command("worker", env), *extra_args], env)
    with _running(worker):
        worker.wait_until(lambda: "ready." in worker.log(), ready_timeout, "ready")
        yield worker


class Beat(_Process):
    """Celery beat: the periodic tasks (take-over sweep, reaper) on $CELERY_QUEUE."""

    name = "celery-beat"


@contextmanager
def celery_beat(env: dict[str, str] | None = None, *, ready_timeout: float = READY_TIMEOUT) -> Iterator[Beat]:
    """The Procfile's ``beat``, with a schedule file of its own; yields once it has started."""
    env = subprocess_env() if env is None else env
    with tempfile.TemporaryDirectory(prefix="quikday-beat-") as directory:
        args = procfile_command("beat", env)
        args[args.index("--schedule") + 1] = str(Path(directory) / "schedule")
        beat = Beat(args, env)
        with _running(beat):
            beat.wait_until(lambda: "beat: Starting..." in beat.log(), ready_timeout, "started")
            yield beat


@contextmanager
def daphne_server(
    env: dict[str, str] | None = None,
    port: int | None = None,
    *,
    ready_timeout: float = READY_TIMEOUT,
) -> Iterator[Server]:
    """A real Daphne on 127.0.0.1; yields once the port accepts connections, stops it on exit."""
    env = subprocess_env() if env is None else env
    port = free_port() if port is None else port
    args = [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "quikday.asgi:application"]
    server = Server(args, env, port)
    with _running(server):
        server.wait_until(server.accepts, ready_timeout, "accepting connections")
        yield server


@contextmanager
def web_servers(
    env: dict[str, str] | None = None,
    processes: int = 2,
    port: int | None = None,
    *,
    ready_timeout: float = READY_TIMEOUT,
) -> Iterator[WebServers]:
    """The Procfile's web command on 127.0.0.1 with ``processes`` Daphne children; stops it on exit."""
    env = subprocess_env() if env is None else env
    port = free_port() if port is None else port
    args = [
        sys.executable,
        "-m",
        "server.web_command",
        "--port",
        str(port),
        "--processes",
        str(processes),
        "--stop-timeout",
        str(STOP_TIMEOUT / 2),
        "--",
        "quikday.asgi:application",
    ]
    server = WebServers(args, env, port)
    with _running(server):
        server.wait_until(lambda: server.listening() >= processes, ready_timeout, "listening")
        yield server


@contextmanager
def _dump_on_failure(request, process: _Process) -> Iterator[None]:
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        process.dump_log()


@pytest.fixture
def worker_process(request, transactional_db) -> Iterator[Worker]:
    """A Celery worker (concurrency 1) for one test; its log is shown if the test fails."""
    with celery_worker() as worker, _dump_on_failure(request, worker):
        yield worker


@pytest.fixture(scope="module")
def _module_daphne(django_db_setup) -> Iterator[Server]:
    with daphne_server() as server:
        yield server


@pytest.fixture
def daphne_process(request, transactional_db, _module_daphne) -> Iterator[Server]:
    """A Daphne server with the default settings, shared by the tests of a module that ask for it.

    Started once per module (a start-up costs seconds): each test still gets
    empty tables (``transactional_db``), and the server holds no state of a
    test past its sockets. Its log is the module's so far (a check for
    tracebacks covers the earlier tests too), shown if the test fails. A test
    that needs a fresh process or other settings starts its own (``daphne_server``).
    """
    if not _module_daphne.alive():
        pytest.fail(f"the module's Daphne exited ({_module_daphne.popen.returncode}) in an earlier test")
    with _dump_on_failure(request, _module_daphne):
        yield _module_daphne
