"""The web command: several Daphne processes behind one port, one per core by default.

One Daphne process runs one event loop on one core. This small parent binds
the port once per child with SO_REUSEPORT (so the kernel spreads incoming
connections evenly over the children), listens with the given backlog, and
starts ``WEB_CONCURRENCY`` (default: the cores this process may use) children
``daphne --endpoint fd:fileno=N``, each adopting its own listening socket (on
uvloop by default: server/daphne_uvloop.py; ``--loop asyncio`` for the plain one),
each Daphne's server being server/daphne_process.py's.

The parent keeps every listening socket open: connections the kernel queued
on a child that dies wait in that socket's backlog until the replacement,
started at once, adopts the same socket — none is refused. The dead child's
WebSockets drop; their clients reconnect with ``?since=`` (docs/protocol.md).
A child that keeps dying at start-up (bad settings) is restarted with a
growing delay; after ``MAX_QUICK_DEATHS`` deaths in a row the parent gives up
and exits 1, so the platform sees a crashed process rather than a silent loop.

SIGTERM or SIGINT to the parent is forwarded (as SIGTERM) to every child,
which closes its WebSockets with 1012, service restart (server/daphne_process.py);
the parent waits ``--stop-timeout`` seconds for them, kills what is left, and
exits 0. Each child also gets SIGTERM if the parent itself dies.

Usage (the Procfile's ``web``)::

    python -m server.web_command --interface 0.0.0.0 --port $PORT --backlog 2048 \\
        -- --proxy-headers quikday.asgi:application

Everything after ``--`` is passed to each ``daphne``. This module imports
nothing of Django: the parent stays small and never opens a database or Redis
connection.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

# A child that dies within this many seconds of its start counts as a quick death.
QUICK_DEATH_SECONDS = 10.0
MAX_QUICK_DEATHS = 5
MAX_RESTART_DELAY = 30.0
_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def default_processes() -> int:
    """``WEB_CONCURRENCY``, else the number of cores this process may run on."""
    raw = os.environ.get("WEB_CONCURRENCY", "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise SystemExit(f"WEB_CONCURRENCY must be a whole number, got {raw!r}") from None
        if value < 1:
            raise SystemExit(f"WEB_CONCURRENCY must be at least 1, got {raw!r}")
        return value
    return len(os.sched_getaffinity(0)) or 1


def listening_socket(interface: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on (interface, port) that other SO_REUSEPORT sockets may share."""
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((interface, port))
        sock.listen(backlog)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def _prepare_child() -> None:
    """In the child, before exec: the signals the parent waits for unblocked again
    (a blocked mask is inherited), and SIGTERM when the parent dies (no orphan keeps the port)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Slot:
    """One child's place: its listening socket, and the process using it now."""

    number: int
    sock: socket.socket
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None
    history: list[int] = field(default_factory=list)  # pids, oldest first


class WebServer:
    stop_timeout = 25.0

    def __init__(
        self,
        *,
        interface: str,
        port: int,
        backlog: int,
        processes: int,
        daphne_args: list[str],
        loop: str = "uvloop",
    ):
        module = "server.daphne_uvloop" if loop == "uvloop" else "server.daphne_process"
        self.daphne = [sys.executable, "-m", module]
        self.daphne_args = daphne_args
        self.slots = []
        for number in range(processes):
            sock = listening_socket(interface, port, backlog)
            port = sock.getsockname()[1]  # port 0: every child on the port the first one got
            self.slots.append(Slot(number, sock))
        self.interface, self.port = interface, port
        self.stopping = False

    def start(self, slot: Slot) -> None:
        domain = ":domain=INET6" if slot.sock.family == socket.AF_INET6 else ""
        argv = [*self.daphne, "--endpoint", f"fd:fileno={slot.sock.fileno()}{domain}", *self.daphne_args]
        slot.process = subprocess.Popen(argv, pass_fds=[slot.sock.fileno()], preexec_fn=_prepare_child)
        slot.started_at = time.monotonic()
        slot.restart_at = None
        slot.history.append(slot.process.pid)
        logger.info("web process %d started: pid %d", slot.number, slot.process.pid)

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, *_STOP_SIGNALS})
        logger.info(
            "serving %s:%d with %d Daphne processes (SO_REUSEPORT)",
            self.interface,
            self.port,
            len(self.slots),
        )
        for slot in self.slots:
            self.start(slot)
        try:
            while True:
                timeout = self._next_restart_in()
                info = signal.sigtimedwait({signal.SIGCHLD, *_STOP_SIGNALS}, timeout)
                if info is not None and info.si_signo in _STOP_SIGNALS:
                    logger.info("received %s: stopping the web processes", signal.Signals(info.si_signo).name)
                    return 0
                if not self._reap():
                    return 1
                self._restart_due()
        finally:
            self.stop()

    def _next_restart_in(self) -> float:
        due = [slot.restart_at for slot in self.slots if slot.restart_at is not None]
        return max(0.0, min(due) - time.monotonic()) if due else 3600.0

    def _reap(self) -> bool:
        """Note the children that exited; schedule their restart. False: give up."""
        for slot in self.slots:
            process = slot.process
            if process is None or process.poll() is None:
                continue
            lived = time.monotonic() - slot.started_at
            slot.process = None
            if lived < QUICK_DEATH_SECONDS:
                slot.quick_deaths += 1
            else:
                slot.quick_deaths = 0
            if slot.quick_deaths >= MAX_QUICK_DEATHS:
                logger.error(
                    "web process %d died %d times in a row within %gs of starting (last: pid %d, exit %s);"
                    " giving up",
                    slot.number,
                    slot.quick_deaths,
                    QUICK_DEATH_SECONDS,
                    process.pid,
                    process.returncode,
                )
                return False
            delay = 0.0 if slot.quick_deaths == 0 else min(MAX_RESTART_DELAY, 0.5 * 2**slot.quick_deaths)
            logger.warning(
                "web process %d (pid %d) exited with %s after %.1fs; restarting it in %gs",
                slot.number,
                process.pid,
                process.returncode,
                lived,
                delay,
            )
            slot.restart_at = time.monotonic() + delay
        return True

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is None and slot.restart_at is not None and slot.restart_at <= now:
                self.start(slot)

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM every child, wait for them (then SIGKILL), close the sockets."""
        timeout = self.stop_timeout if timeout is None else timeout
        running = [slot.process for slot in self.slots if slot.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("web process pid %d did not stop within %gs; killing it", process.pid, timeout)
                process.kill()
                process.wait()
        for slot in self.slots:
            slot.process = None
            slot.sock.close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m server.web_command",
        description="Several Daphne processes on one port (arguments after -- go to each daphne).",
    )
    parser.add_argument("--interface", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
    parser.add_argument("--backlog", type=int, default=int(os.environ.get("WEB_LISTEN_BACKLOG") or 2048))
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="Daphne processes (default: WEB_CONCURRENCY, else the number of cores)",
    )
    parser.add_argument("--stop-timeout", type=float, default=WebServer.stop_timeout)
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default=os.environ.get("WEB_EVENT_LOOP") or "uvloop",
        help="the event loop under each Daphne's Twisted reactor (default: WEB_EVENT_LOOP, else uvloop)",
    )
    parser.add_argument("daphne_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.daphne_args and args.daphne_args[0] == "--":
        args.daphne_args = args.daphne_args[1:]
    if not args.daphne_args:
        parser.error("give daphne's arguments after --, at least the application (quikday.asgi:application)")
    if args.processes is None:
        args.processes = default_processes()
    elif args.processes < 1:
        parser.error("--processes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    server = WebServer(
        interface=args.interface,
        port=args.port,
        backlog=args.backlog,
        processes=args.processes,
        daphne_args=args.daphne_args,
        loop=args.loop,
    )
    server.stop_timeout = args.stop_timeout
    return server.run()


if __name__ == "__main__":
    sys.exit(main())
