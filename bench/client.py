"""The bench load client: thousands of WebSockets in one asyncio process.

Runs in its own process (so its CPU is not the server's) and is driven by the
orchestrator (bench/run.py) over stdin/stdout, one JSON object per line:

    {"op": "open", "url": ..., "token": ..., "runs": [...], "per_run": 10, "batch": 200}
    {"op": "reset"}                      forget latency samples so far
    {"op": "count"}                      event frames received since the last reset
    {"op": "wait_closed", "timeout": 30} wait until the server closed every socket
    {"op": "stats", "expected": {run_id: final_seq}}
    {"op": "close"} / {"op": "exit"}

Each answer is one JSON line. Per frame the client records receipt time minus
the frame's ``ts`` (the server's commit time; same host, same clock), and per
connection checks that seqs arrive contiguous and once (gaps, duplicates).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from datetime import datetime

from websockets.asyncio.client import connect


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_ts(value: str) -> float:
    # "2026-11-27T16:07:59.000123Z" — fromisoformat handles the Z on 3.11.
    return datetime.fromisoformat(value).timestamp()


def percentiles(samples: list[float]) -> dict:
    if not samples:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    ordered = sorted(samples)
    n = len(ordered)

    def pick(q: float) -> float:
        return round(ordered[min(n - 1, int(q * n))], 2)

    return {
        "n": n,
        "p50": pick(0.50),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "mean": round(sum(ordered) / n, 2),
        "max": round(ordered[-1], 2),
    }


class Watcher:
    """One WebSocket on one run."""

    __slots__ = ("close_code", "connected", "dups", "final", "frames", "gaps", "last_seq", "run_id", "ws")

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.last_seq: int | None = None
        self.gaps = 0  # events skipped (seq jumped)
        self.dups = 0  # events seen twice or out of order
        self.final = False
        self.close_code: int | None = None
        self.connected = False
        self.frames = 0
        self.ws = None


class Client:
    def __init__(self) -> None:
        self.watchers: list[Watcher] = []
        self.tasks: set[asyncio.Task] = set()
        self.latencies: list[float] = []
        self.received: list[tuple[str, int, float]] = []  # (run, seq, receipt time) per event frame
        self.connect_ms: list[float] = []
        self.errors: dict[str, int] = {}
        self.frames = 0

    # --- one connection ---------------------------------------------------------

    async def watch(self, url: str, token: str, watcher: Watcher, started: asyncio.Event | None) -> None:
        begin = time.perf_counter()
        try:
            async with connect(
                url,
                additional_headers={"Authorization": f"Token {token}"},
                compression=None,
                proxy=None,
                open_timeout=60,
                ping_interval=None,  # the server pings; idle sockets should be idle
                close_timeout=5,
                max_queue=None,
            ) as ws:
                watcher.ws = ws
                async for raw in ws:
                    self.on_frame(watcher, raw, begin)
                watcher.close_code = ws.close_code
        except Exception as error:
            name = type(error).__name__
            self.errors[name] = self.errors.get(name, 0) + 1
            if watcher.ws is not None:
                watcher.close_code = watcher.ws.close_code
        finally:
            watcher.ws = None
            if watcher.close_code is None:
                watcher.close_code = -1

    def on_frame(self, watcher: Watcher, raw: str, begin: float) -> None:
        now = time.time()
        frame = json.loads(raw)
        kind = frame.get("type")
        seq = frame.get("seq")
        if kind == "connected":
            self.connect_ms.append((time.perf_counter() - begin) * 1000)
            watcher.connected = True
            watcher.last_seq = seq
            return
        if kind in ("pong", "error"):
            return
        self.frames += 1
        watcher.frames += 1
        self.latencies.append((now - parse_ts(frame["ts"])) * 1000)
        self.received.append((watcher.run_id, seq, now))
        last = watcher.last_seq or 0
        if seq <= last:
            watcher.dups += 1
            return
        if seq > last + 1:
            watcher.gaps += seq - last - 1
        watcher.last_seq = seq
        if kind == "run_completed":
            watcher.final = True

    # --- operations -------------------------------------------------------------

    async def op_open(
        self, url: str, token: str, runs: list[str], per_run: int, batch: int = 0, budget_s: float = 0, **_
    ) -> dict:
        """Open per_run sockets on each run; ``batch`` at a time (0 = all at once).

        With ``budget_s``, no new batch starts once that many seconds have passed."""
        new = [Watcher(run_id) for _ in range(per_run) for run_id in runs]
        start_connected = sum(w.connected for w in self.watchers)
        self.connect_ms = []
        began = time.perf_counter()
        step = batch or len(new)
        for offset in range(0, len(new), step):
            if budget_s and time.perf_counter() - began > budget_s:
                new = new[:offset]
                break
            chunk = new[offset : offset + step]
            for watcher in chunk:
                task = asyncio.create_task(
                    self.watch(f"{url}/ws/runs/{watcher.run_id}/", token, watcher, None)
                )
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            self.watchers.extend(chunk)
            await self._until(lambda c=chunk: all(w.connected or w.close_code is not None for w in c), 90)
        elapsed = time.perf_counter() - began
        connected = sum(w.connected for w in self.watchers) - start_connected
        return {
            "opened": len(new),
            "connected": connected,
            "failed": len(new) - connected,
            "errors": dict(self.errors),
            "connect_ms": percentiles(self.connect_ms),
            "elapsed_s": round(elapsed, 3),
        }

    async def op_wait_closed(self, timeout: float = 30, cap: float = 300, **_) -> dict:
        """Wait until the server closed every socket, as long as frames keep coming.

        Gives up once no frame arrived for ``timeout`` seconds (or after ``cap``):
        a slow server's backlog is latency, not loss; only what never comes is lost.
        """
        began = time.monotonic()
        seen, last_progress = self.frames, began
        while any(w.close_code is None for w in self.watchers):
            now = time.monotonic()
            if self.frames != seen:
                seen, last_progress = self.frames, now
            if now - last_progress > timeout or now - began > cap:
                break
            await asyncio.sleep(0.05)
        open_ = sum(w.close_code is None for w in self.watchers)
        return {"still_open": open_, "drain_s": round(time.monotonic() - began, 2)}

    async def op_stats(self, expected: dict | None = None, commits: dict | None = None, **_) -> dict:
        """Tallies; ``expected`` = {run: final seq} counts losses, ``commits`` =
        {run: {seq: commit time}} gives latency from the commit's end."""
        expected = expected or {}
        delivery = []
        if commits:
            for run_id, seq, at in self.received:
                done = commits.get(run_id, {}).get(str(seq))
                if done is not None:
                    delivery.append((at - done) * 1000)
        lost = 0
        for w in self.watchers:
            if not w.connected:
                continue
            lost += w.gaps
            want = expected.get(w.run_id)
            if want is not None and (w.last_seq or 0) < want:
                lost += want - (w.last_seq or 0)
        codes: dict[str, int] = {}
        for w in self.watchers:
            key = str(w.close_code)
            codes[key] = codes.get(key, 0) + 1
        return {
            "watchers": len(self.watchers),
            "connected": sum(w.connected for w in self.watchers),
            "open": sum(w.close_code is None for w in self.watchers),
            "frames": self.frames,
            "latency_ms": percentiles(self.latencies),
            "delivery_ms": percentiles(delivery),
            "gaps": sum(w.gaps for w in self.watchers),
            "duplicates": sum(w.dups for w in self.watchers),
            "lost": lost,
            "finals": sum(w.final for w in self.watchers),
            "close_codes": codes,
            "errors": dict(self.errors),
        }

    async def op_detail(self, **_) -> dict:
        """Every watcher's state (for debugging a loss)."""
        rows = [
            [w.run_id, w.last_seq, w.frames, w.gaps, w.dups, w.final, w.close_code] for w in self.watchers
        ]
        return {"columns": ["run", "last_seq", "frames", "gaps", "dups", "final", "close"], "rows": rows}

    async def op_count(self, **_) -> dict:
        """Event frames received since the last reset (cheap: no percentiles)."""
        return {"frames": self.frames}

    async def op_reset(self, **_) -> dict:
        self.latencies = []
        self.received = []
        self.frames = 0
        return {"reset": True}

    async def op_close(self, **_) -> dict:
        sockets = [w.ws for w in self.watchers if w.ws is not None]
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        await self._until(lambda: not self.tasks, 30)
        for task in list(self.tasks):
            task.cancel()
        self.watchers = []
        self.latencies = []
        self.received = []
        self.errors = {}
        self.frames = 0
        return {"closed": len(sockets)}

    @staticmethod
    async def _until(predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True


async def serve() -> None:
    client = Client()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True, "nofile": raise_fd_limit()}), flush=True)
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        op = command.pop("op")
        if op == "exit":
            await client.op_close()
            print(json.dumps({"bye": True}), flush=True)
            break
        try:
            answer = await getattr(client, f"op_{op}")(**command)
        except Exception as error:
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    asyncio.run(serve())
