"""Every place this project relies on another library's internals, and the one guard they share.

A patch, a copied method or a read of a private attribute was written against
one release of its package. Each is registered here as a ``Reach``: the
package, the releases it was read against, what of the package's source it
relies on (checked by reading that source, without importing it), and its kind:

- ``speed``: it only saves CPU or memory. On a release it was not read
  against, or with what it relies on changed, it is skipped (the library's
  own code runs) and the process says so: one WARNING line, the gauge
  ``quikday_upstream_reach_unverified`` in /metrics, a line on the staff
  Realtime page. The service starts.
- ``correctness``: behaviour the tests hold depends on it. It is still applied
  where it can be (production only ever installs requirements.txt's pins, the
  releases CI ran), with the same WARNING, gauge and page line; the test that
  fails is tests/test_upstream.py, in CI, the day the installed release is
  not one it was read against.

The modules that reach ask ``usable(name)`` before applying; start-up calls
``review()`` so every unverified reach is reported once per process, used or not.
At start-up only versions are compared (a few metadata reads); the source is
read there only for a correctness reach on another release, and always by the tests.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from importlib import metadata

logger = logging.getLogger(__name__)

SPEED = "speed"
CORRECTNESS = "correctness"

# Tests only: "package=version,..." makes the guard see those versions installed (a real
# Daphne started by a test cannot be monkeypatched). Never set in production.
PRETEND_VERSIONS_ENV = "QUIKDAY_TEST_PRETEND_INSTALLED"


@dataclass(frozen=True)
class Read:
    """A definition in a package's source a reach depends on: ``module:Qualified.name``, which
    must exist, and contain ``contains`` / hash (its source text) to ``sha256`` when given."""

    where: str
    contains: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Reach:
    name: str
    package: str
    read_against: tuple[str, ...]  # releases: "4.2" is any 4.2.x
    kind: str
    used_by: str
    why: str
    reads: tuple[Read, ...]


REACHES = {
    reach.name: reach
    for reach in (
        Reach(
            name="daphne-application-queue",
            package="daphne",
            read_against=("4.2",),
            kind=SPEED,
            used_by="server/daphne_tuning.py lean_application_queues",
            why="a copy of Server.create_application giving each connection a LeanQueue (memory per socket)",
            reads=(
                Read(
                    "daphne.server:Server.create_application",
                    sha256="e440a9663047ea8568dbb2e68ec6dae0a110d4f82e70a16712e84d7acccbeffa",
                ),
            ),
        ),
        Reach(
            name="daphne-connection-transport",
            package="daphne",
            read_against=("4.2",),
            kind=CORRECTNESS,
            used_by="server/daphne_tuning.py unsent_bytes, read_in_small_chunks, hold_reading",
            why="the ASGI send is a partial of handle_reply on the connection's protocol: its transport",
            reads=(
                Read(
                    "daphne.server:Server.create_application", contains="partial(self.handle_reply, protocol)"
                ),
            ),
        ),
        Reach(
            name="twisted-write-buffer",
            package="Twisted",
            read_against=("26.10",),
            kind=CORRECTNESS,
            used_by="server/daphne_tuning.py unsent_bytes, read_in_small_chunks, hold_reading",
            why="a transport's private write buffer (the bound on a client that stops reading) and read size",
            reads=(
                Read("twisted.internet.abstract:FileDescriptor.dataBuffer"),
                Read("twisted.internet.abstract:FileDescriptor.offset"),
                Read("twisted.internet.abstract:FileDescriptor.__init__", contains="self._tempDataLen = 0"),
                Read("twisted.internet.abstract:FileDescriptor.bufferSize"),
                Read("twisted.internet.abstract:FileDescriptor.pauseProducing"),
                Read("twisted.internet.abstract:FileDescriptor.resumeProducing"),
                Read("twisted.internet.abstract:FileDescriptor.loseConnection"),
            ),
        ),
        Reach(
            name="daphne-close-handshake",
            package="daphne",
            read_against=("4.2",),
            kind=CORRECTNESS,
            used_by="server/daphne_tuning.py wait_longer_for_close_replies",
            why="WebSocketFactory.__init__ wrapped to set autobahn's closeHandshakeTimeout and failByDrop",
            reads=(Read("daphne.ws_protocol:WebSocketFactory.__init__"),),
        ),
        Reach(
            name="autobahn-control-frames",
            package="autobahn",
            read_against=("26.10",),
            kind=CORRECTNESS,
            used_by="server/daphne_tuning.py hand_control_frames_to_applications, judge_control_frames",
            why="onPing/onPong replaced: a client's pings spend its frame budget, unread pongs are bounded",
            reads=(
                Read(
                    "autobahn.websocket.protocol:WebSocketProtocol.onPing", contains="self.sendPong(payload)"
                ),
                Read("autobahn.websocket.protocol:WebSocketProtocol.onPong"),
                Read("autobahn.websocket.protocol:WebSocketProtocol.sendPong"),
                Read("autobahn.websocket.protocol:WebSocketProtocol.STATE_OPEN"),
                Read(
                    "daphne.ws_protocol:WebSocketProtocol.applicationCreateWorked",
                    contains="self.application_queue = application_queue",
                ),
            ),
        ),
        Reach(
            name="autobahn-message-too-big",
            package="autobahn",
            read_against=("26.10",),
            kind=CORRECTNESS,
            used_by="server/daphne_tuning.py close_too_big_messages_with",
            why="_max_message_size_exceeded replaced: a message over Daphne's limit closes 4009, not 1009",
            reads=(
                Read("autobahn.websocket.protocol:WebSocketProtocol._max_message_size_exceeded"),
                Read("autobahn.websocket.protocol:WebSocketProtocol._fail_connection"),
                Read(
                    "autobahn.websocket.protocol:WebSocketProtocol.onMessageFrameBegin",
                    contains="self._max_message_size_exceeded(",
                ),
            ),
        ),
        Reach(
            name="autobahn-connect-option-dump",
            package="autobahn",
            read_against=("26.10",),
            kind=SPEED,
            used_by="server/daphne_connect.py skip_unlogged_option_dump",
            why="_connectionMade wrapped: its options are not pretty-printed for a debug line that is off",
            reads=(
                Read(
                    "autobahn.websocket.protocol:WebSocketProtocol._connectionMade",
                    sha256="a9a04a1d40682a160988d5300c93aaa9a964cfe3fbbae6917fba02d5948596b6",
                ),
            ),
        ),
        Reach(
            name="daphne-graceful-restart",
            package="daphne",
            read_against=("4.2",),
            kind=CORRECTNESS,
            used_by="server/daphne_process.py RestartingServer",
            why="Daphne command line's server class, its connections, its shutdown hook: 1012 on SIGTERM",
            reads=(
                Read("daphne.cli:CommandLineInterface.server_class"),
                Read("daphne.cli:CommandLineInterface.run", contains="self.server = self.server_class("),
                Read("daphne.server:Server.run", contains="self.connections = {}"),
                Read("daphne.server:Server.run", contains='"shutdown", self.kill_all_applications'),
                Read("daphne.server:Server.kill_all_applications"),
            ),
        ),
        Reach(
            name="autobahn-server-close-frame",
            package="autobahn",
            read_against=("26.10",),
            kind=CORRECTNESS,
            used_by="server/daphne_process.py RestartingServer",
            why="sendCloseFrame, autobahn's own close without sendClose's 1000/3000-4999 check: 1012",
            reads=(
                Read("autobahn.websocket.protocol:WebSocketProtocol.sendCloseFrame"),
                Read("autobahn.websocket.protocol:WebSocketProtocol.STATE_CLOSED"),
                Read("autobahn.websocket.protocol:WebSocketProtocol.STATE_OPEN"),
            ),
        ),
        Reach(
            name="daphne-access-log",
            package="daphne",
            read_against=("4.2",),
            kind=CORRECTNESS,
            used_by="server/access_log.py route_through_logging",
            why="AccessLogGenerator.write_entry replaced: access lines redacted, through logging",
            reads=(
                Read("daphne.access:AccessLogGenerator.write_entry"),
                Read(
                    "daphne.access:AccessLogGenerator.__call__",
                    sha256="cdd3711d038d24bc2b9aeac8bf529d07d1fcd408efae9ecc484402adc13809b0",
                ),
            ),
        ),
        Reach(
            name="kombu-redis-connparams",
            package="kombu",
            read_against=("5.7",),
            kind=CORRECTNESS,
            used_by="server/kombu_patch.py",
            why="Channel._connparams wrapped: a worker survives a Redis restart",
            reads=(
                Read(
                    "kombu.transport.redis:Channel._connparams", contains="conninfo = self.connection.client"
                ),
            ),
        ),
        Reach(
            name="celery-broker-outage-lines",
            package="celery",
            read_against=("5.7",),
            kind=CORRECTNESS,
            used_by="server/broker_outage_logging.py BrokerOutageFilter",
            why="a worker's broker outage told by one WARNING and one recovery line: Celery's texts",
            reads=(
                Read(
                    "celery.worker.consumer.consumer:CONNECTION_RETRY", contains="Connection to broker lost"
                ),
                Read(
                    "celery.worker.consumer.consumer:CONNECTION_ERROR",
                    contains="consumer: Cannot connect to %s",
                ),
                Read(
                    "celery.worker.consumer.consumer:CANCEL_TASKS_BY_DEFAULT",
                    contains="worker_cancel_long_running_tasks_on_connection_loss",
                ),
                Read("celery.worker.consumer.connection:Connection.start", contains="info('Connected to %s'"),
            ),
        ),
        Reach(
            name="kombu-ack-failure-line",
            package="kombu",
            read_against=("5.7",),
            kind=CORRECTNESS,
            used_by="server/broker_outage_logging.py BrokerOutageFilter",
            why="the CRITICAL traceback of an ack on a lost connection told as one INFO line: kombu's text",
            reads=(Read("kombu.message:Message.ack_log_error", contains='"Couldn\'t ack %r, reason:%r"'),),
        ),
        Reach(
            name="channels-redis-sharding",
            package="channels_redis",
            read_against=("4.3",),
            kind=CORRECTNESS,
            used_by="realtime/events/shards.py",
            why="which Redis server holds a group (failover per server) and a channel without SUBSCRIBE",
            reads=(
                Read(
                    "channels_redis.utils:_consistent_hash",
                    sha256="3e1dd656397c2222458c3a7c4382ab70cb524224cf7d4877587370b95cc2dcfe",
                ),
                Read("channels_redis.utils:decode_hosts"),
                Read(
                    "channels_redis.pubsub:RedisPubSubChannelLayer.__init__", contains="self._kwargs = kwargs"
                ),
                Read("channels_redis.pubsub:RedisPubSubChannelLayer._get_layer"),
                Read("channels_redis.pubsub:RedisPubSubLoopLayer.__init__", contains="self.channels = {}"),
                Read(
                    "channels_redis.pubsub:RedisPubSubLoopLayer._get_group_channel_name", contains="__group__"
                ),
            ),
        ),
        Reach(
            name="prometheus-histogram-batch",
            package="prometheus_client",
            read_against=("0.26",),
            kind=SPEED,
            used_by="observability/record.py _FrameTally.flush",
            why="a batch of latencies added to a histogram's bucket and sum values at once",
            reads=(
                Read("prometheus_client.metrics:Histogram._metric_init", contains="self._buckets.append("),
                Read(
                    "prometheus_client.metrics:Histogram._metric_init",
                    contains="self._sum = values.ValueClass(",
                ),
            ),
        ),
        Reach(
            name="django-on-commit-queue",
            package="Django",
            read_against=("5.2",),
            kind=SPEED,
            used_by="realtime/runlist/list_feed.py note_change",
            why="a run's summary published once per transaction, not once per change",
            reads=(
                Read(
                    "django.db.backends.base.base:BaseDatabaseWrapper.on_commit",
                    contains="self.run_on_commit.append((set(self.savepoint_ids), func, robust))",
                ),
            ),
        ),
        Reach(
            name="channels-consumer-loop",
            package="channels",
            read_against=("4.3",),
            kind=CORRECTNESS,
            used_by="realtime/sockets/socket.py ProtocolSocket.__call__, dispatch",
            why="copies of AsyncConsumer's: no layer channel per socket, no database hop per message",
            reads=(
                Read(
                    "channels.consumer:AsyncConsumer.__call__",
                    sha256="bee272af3ba78b4e6fa76b7f23f7df7494e1be79a53b30606715dc13e93ff0ee",
                ),
                Read(
                    "channels.consumer:AsyncConsumer.dispatch",
                    sha256="8acee1bceaa8491cc9349c1359a5078ca432e08308ede30db93c47b472d778c2",
                ),
            ),
        ),
    )
}


def _pretended() -> dict[str, str]:
    pairs = (
        item.split("=", 1) for item in os.environ.get(PRETEND_VERSIONS_ENV, "").split(",") if "=" in item
    )
    return {_key(name): version.strip() for name, version in pairs}


def _key(package: str) -> str:
    return package.strip().lower().replace("_", "-")


def installed_version(package: str) -> str | None:
    """The installed release of ``package`` as the guard sees it; None when it is not installed."""
    pretended = _pretended().get(_key(package))
    if pretended:
        return pretended
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def read_against(reach: Reach, version: str) -> bool:
    release = version.split("+")[0].split(".")
    return any(release[: len(prefix.split("."))] == prefix.split(".") for prefix in reach.read_against)


def source_of(where: str) -> str | None:
    """The source text of ``module:Qualified.name`` (a def, a class or an assignment), read
    from the installed file without importing the module; None when it is not there."""
    module, _, qualname = where.partition(":")
    parsed = _parsed(module)
    if parsed is None:
        return None
    lines, body = parsed
    node = None
    for part in qualname.split("."):
        node = next((child for child in body if part in _names(child)), None)
        if node is None:
            return None
        body = getattr(node, "body", [])
    # ast.get_source_segment's text, from lines split once per file (it splits the file per call).
    first, last = node.lineno - 1, node.end_lineno - 1
    if first == last:
        return lines[first].encode()[node.col_offset : node.end_col_offset].decode()
    head = lines[first].encode()[node.col_offset :].decode()
    tail = lines[last].encode()[: node.end_col_offset].decode()
    return "".join([head, *lines[first + 1 : last], tail])


@functools.cache
def _parsed(module: str) -> tuple[list[str], list[ast.stmt]] | None:
    """A module's source lines and its parsed top-level statements (each file once: reads share it)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    with open(spec.origin, encoding="utf-8") as file:
        text = file.read()
    return text.splitlines(keepends=True), ast.parse(text).body


def _names(node: ast.AST) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {target.id for target in node.targets if isinstance(target, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    return set()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def problem(reach: Reach) -> str | None:
    """Why ``reach`` is not verified on the installed release, or None: the check made at start-up.

    On a release it was read against the source is the one CI read (production installs
    requirements.txt's pins), so only the version is looked at here; ``verify`` also reads the source.
    """
    version = installed_version(reach.package)
    if version is None:
        return f"{reach.package} is not installed"
    if not read_against(reach, version):
        read = ", ".join(reach.read_against)
        return f"read against {reach.package} {read}, {reach.package} {version} is installed"
    return None


def verify(reach: Reach) -> str | None:
    """``problem``, or what of the source the reach relies on changed: the check CI makes."""
    return problem(reach) or changed_source(reach)


def changed_source(reach: Reach) -> str | None:
    """What of the source ``reach`` relies on is gone or different, or None."""
    for read in reach.reads:
        source = source_of(read.where)
        if source is None:
            return f"{read.where} no longer exists"
        if read.contains is not None and read.contains not in source:
            return f"{read.where} no longer contains {read.contains!r}"
        if read.sha256 is not None and sha256(source) != read.sha256:
            return f"{read.where} changed (its source is not the one read)"
    return None


_reviewed: dict[str, str | None] = {}


def review() -> dict[str, str | None]:
    """Every reach's problem (None: verified), checked once per process; each problem logged once."""
    for name, reach in REACHES.items():
        if name not in _reviewed:
            _reviewed[name] = found = problem(reach)
            if found is not None:
                action = "skipped" if reach.kind == SPEED else "applied unverified (CI fails on this release)"
                logger.warning(
                    "upstream reach %s (%s, %s) %s: %s",
                    name,
                    reach.kind,
                    reach.used_by,
                    action,
                    found,
                    extra={"event": "upstream_unverified", "reach": name, "kind": reach.kind},
                )
    return dict(_reviewed)


def usable(name: str) -> bool:
    """Whether to apply reach ``name``: a speed one only when verified; a correctness one
    whenever what it relies on still exists (unverified, it is reported by review())."""
    reach = REACHES[name]
    found = _reviewed[name] if name in _reviewed else review()[name]
    if found is None:
        return True
    return reach.kind == CORRECTNESS and changed_source(reach) is None


def unverified() -> list[dict[str, str]]:
    """The reaches not verified on what is installed, for /metrics and the staff page."""
    return [
        {
            "reach": name,
            "package": REACHES[name].package,
            "kind": REACHES[name].kind,
            "action": "skipped" if not usable(name) else "applied",
            "problem": found,
        }
        for name, found in review().items()
        if found is not None
    ]


def forget() -> None:
    """Review again at the next call (tests that change what the guard sees)."""
    _reviewed.clear()
