"""The user-level stream /ws/runs/: summaries of every run the user may see (staff: all).

One socket per list page, whatever the number of runs on it. After the
handshake the consumer joins the user's group (and staff's), then reads the
newest runs' summaries and sends them in ``connected``; after that each
``run_summary`` the publisher sends after a run-level or step change
(realtime.list_feed) is relayed. Joining before reading means a
change committed while connecting is either in the snapshot or relayed; the
consumer (and the client) keep per run the highest seq, so a run's line never
goes back. A reconnect gets a fresh snapshot, so nothing is missed across it;
the same re-read every REALTIME_LIST_REFRESH_INTERVAL (REALTIME_POLL_INTERVAL
in poll mode, where nothing is published) covers a summary lost in transit.
"""

from __future__ import annotations

import asyncio
import json
import logging

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from observability import record
from realtime import db, frames, selectors, summaries
from realtime.consumers.base import CLOSE_UNAUTHENTICATED

# A client frame over REALTIME_MAX_CLIENT_FRAME. Not 1009: autobahn (Daphne) lets a
# server close only with 1000 or 3000-4999, and turns 1009 into a 1011 with a traceback.
CLOSE_TOO_BIG = 4009

logger = logging.getLogger(__name__)


class RunListConsumer(AsyncWebsocketConsumer):
    """Streams the summaries of a user's runs to one list page."""

    async def connect(self) -> None:
        self.seen: dict[str, int] = {}  # run id → the highest seq sent for it
        self.joined: list[str] = []
        self.refresher: asyncio.Task | None = None
        await self.accept()
        self.observed = record.socket_opened(mode="list", run_id=None)
        user = self.scope.get("user")
        token_key = self.scope.get("auth_token")
        if token_key is not None:
            user = await db.read(selectors.user_for_token, key=token_key)
        if user is None or not user.is_authenticated:
            await self._send_frame(
                "error", {"code": str(CLOSE_UNAUTHENTICATED), "message": "not authenticated"}
            )
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user = user
        groups = [frames.user_group_name(user.pk)] + ([frames.STAFF_GROUP] if user.is_staff else [])
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.append(group)
        runs = await self._read()
        await self._send_frame("connected", {"mode": settings.REALTIME_MODE, "runs": runs})
        self.refresher = asyncio.create_task(self._refresh())

    async def _read(self) -> list[dict]:
        runs = await db.read(summaries.run_summaries_for_user, user=self.user)
        for summary in runs:
            self.seen[summary["id"]] = max(self.seen.get(summary["id"], -1), summary["seq"])
        return runs

    async def _refresh(self) -> None:
        interval = (
            settings.REALTIME_POLL_INTERVAL
            if settings.REALTIME_MODE == "poll"
            else settings.REALTIME_LIST_REFRESH_INTERVAL
        )
        while True:
            await asyncio.sleep(interval)
            try:
                runs = await db.read(summaries.run_summaries_for_user, user=self.user)
            except Exception as error:  # noqa: BLE001 - the next round tries again
                logger.warning("list stream refresh failed: %s", error)
                continue
            for summary in reversed(runs):  # oldest first, so new runs arrive in creation order
                if summary["seq"] > self.seen.get(summary["id"], -1):
                    self.seen[summary["id"]] = summary["seq"]
                    await self._send_frame(frames.RUN_SUMMARY, {"run": summary}, run_id=summary["id"])

    async def run_summary(self, message: dict) -> None:
        """A summary from the publisher: relay it unless this socket has that seq already."""
        run_id, seq = message["run_id"], message["seq"]
        if seq <= self.seen.get(run_id, -1):
            return
        self.seen[run_id] = seq
        await self.send(text_data=message["text"])

    async def disconnect(self, code: int) -> None:
        record.socket_closed(self.observed, code)
        if self.refresher is not None:
            self.refresher.cancel()
        for group in self.joined:
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception as error:  # noqa: BLE001 - the layer may be down; memberships expire
                logger.warning("leaving %s failed: %s", group, error)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The client frames of docs/protocol.md: ``ping``; anything else is an ``error`` frame."""
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > settings.REALTIME_MAX_CLIENT_FRAME:
            await self._error(
                str(CLOSE_TOO_BIG),
                f"a client frame may have at most {settings.REALTIME_MAX_CLIENT_FRAME} bytes",
            )
            await self.close(code=CLOSE_TOO_BIG)
            return
        if text_data is None:
            await self._error("binary_not_supported", "send JSON text frames")
            return
        try:
            frame = json.loads(text_data)
        except ValueError:
            frame = None
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "ping":
            await self._send_frame("pong", {})
        elif not isinstance(kind, str):
            await self._error("malformed", 'a client frame is a JSON object with a "type"')
        else:
            await self._error("unknown_type", f"unknown frame type {kind[:64]!r}; the client may send 'ping'")

    async def _error(self, code: str, message: str) -> None:
        await self._send_frame("error", {"code": code, "message": message})

    async def _send_frame(self, type: str, payload: dict, *, run_id: str = "") -> None:
        seq = payload["run"]["seq"] if type == frames.RUN_SUMMARY else 0
        frame = frames.build_frame(type=type, run_id=run_id, seq=seq, ts=timezone.now(), payload=payload)
        await self.send(text_data=frames.encode_frame(frame))
