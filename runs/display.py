"""How a moment reads for people: UTC, to the second, 24-hour, marked "UTC".

One format on every page, in the admin and in the pages' scripts (web/static/web/time.js
writes the same text), so that a time reads alike before and after a page's script runs,
whoever's browser and wherever the server: `2026-11-27 16:07:59 UTC`.
"""

from __future__ import annotations

from datetime import UTC, datetime


def to_second(moment: datetime | str | None) -> str:
    """A datetime or an ISO 8601 string (the API's) as people read it; "—" for none."""
    if not moment:
        return "—"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
