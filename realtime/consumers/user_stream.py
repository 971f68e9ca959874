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
import logging

from django.conf import settings
from django.utils import timezone

from realtime import db, frames, selectors, summaries
from realtime.close_codes import CLOSE_UNAUTHENTICATED
from realtime.consumers.socket import ProtocolSocket

logger = logging.getLogger(__name__)


class RunListConsumer(ProtocolSocket):
    """Streams the summaries of a user's runs to one list page."""

    async def connect(self) -> None:
        self.seen: dict[str, int] = {}  # run id → the highest seq sent for it
        self.joined: list[str] = []
        self.refresher: asyncio.Task | None = None
        await self.accept()
        user = self.scope.get("user")
        token_key = self.scope.get("auth_token")
        if token_key is not None:
            user = await db.read(selectors.user_for_token, key=token_key)
        if user is None or not user.is_authenticated:
            await self._refuse(CLOSE_UNAUTHENTICATED, "not authenticated")
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
        if self.refresher is not None:
            self.refresher.cancel()
        for group in self.joined:
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception as error:  # noqa: BLE001 - the layer may be down; memberships expire
                logger.warning("leaving %s failed: %s", group, error)

    async def _error(self, code: str, message: str) -> None:
        await self._send_frame("error", {"code": code, "message": message})

    async def _pong(self) -> None:
        await self._send_frame("pong", {})

    async def _send_frame(self, type: str, payload: dict, *, run_id: str = "") -> None:
        seq = payload["run"]["seq"] if type == frames.RUN_SUMMARY else 0
        frame = frames.build_frame(type=type, run_id=run_id, seq=seq, ts=timezone.now(), payload=payload)
        await self.send(text_data=frames.encode_frame(frame))
