"""Connection tickets: how a page on another origin opens a WebSocket without a long-lived token in the URL.

A browser cannot set an ``Authorization`` header on a WebSocket, and a cookie
from another origin is exactly what the Origin check refuses. So a client
asks ``POST /api/ws-tickets/`` (with its token or session) for a ticket, and
connects with ``?ticket=<ticket>``. A ticket is random, valid for
REALTIME_TICKET_SECONDS and consumed by its first handshake, so a copy of the
URL in a proxy's or server's log is worthless. Tickets live in the database
(every web process sees them), stored as SHA-256 only; one atomic
``DELETE … RETURNING`` both checks and consumes one, so two handshakes racing
with the same ticket cannot both win.

A ticket asked for with an API token stands for that token: it stores the
token's SHA-256, is refused if the token was deleted or rotated before the
handshake, and the socket it opens is re-checked against the token by the
access watch (realtime.delivery.access_watch), so revoking the token closes it with 4401
as it closes a socket opened with the token itself. A ticket asked for with a
browser session is re-checked against its user.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from realtime.models import ConnectionTicket

# token_urlsafe(32) gives 43 characters; anything else cannot be a ticket.
TICKET_LENGTH = 43
QUERY_PARAMETER = "ticket"


def _hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


class Admitted(NamedTuple):
    """Who a ticket lets in, and the API token it was asked for with (None: a session)."""

    user: object
    token_key: str | None


def issue_ticket(*, user, token_key: str | None = None) -> tuple[str, datetime]:
    """A new ticket for ``user`` (asked for with API token ``token_key``, if any) and when it
    expires. Expired tickets are pruned on the way."""
    ticket = secrets.token_urlsafe(32)
    now = timezone.now()
    expires_at = now + timedelta(seconds=settings.REALTIME_TICKET_SECONDS)
    token_hash = _hash(token_key) if token_key is not None else ""
    with transaction.atomic():
        ConnectionTicket.objects.filter(expires_at__lte=now).delete()
        ConnectionTicket.objects.create(
            key_hash=_hash(ticket), user=user, expires_at=expires_at, token_hash=token_hash
        )
    return ticket, expires_at


def consume_ticket(*, ticket: str) -> Admitted | None:
    """Whom the ticket lets in, or None (expired, unknown, its user inactive, or the token it was
    asked for with deleted or rotated since); the ticket is used up either way."""
    if len(ticket) != TICKET_LENGTH or not ticket.isascii():
        return None
    table = ConnectionTicket._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE key_hash = %s RETURNING user_id, expires_at, token_hash",  # noqa: S608
            [_hash(ticket)],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    user_id, expires_at, token_hash = row
    if isinstance(expires_at, str):  # SQLite returns the raw column
        expires_at = datetime.fromisoformat(expires_at)
    if timezone.is_naive(expires_at):
        expires_at = timezone.make_aware(expires_at, timezone.get_current_timezone())
    if expires_at <= timezone.now():
        return None
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None or not token_hash:
        return Admitted(user, None) if user is not None else None
    token_key = _token_key_of(user_id=user_id)
    if token_key is None or _hash(token_key) != token_hash:
        return None  # the token that asked was deleted or rotated
    return Admitted(user, token_key)


def _token_key_of(*, user_id: int) -> str | None:
    """The user's API token's key (DRF's authtoken: at most one per user), or None."""
    from rest_framework.authtoken.models import Token

    return Token.objects.filter(user_id=user_id).values_list("key", flat=True).first()
