"""The per-run event log: every observable change, with its sequence number."""

from django.conf import settings
from django.db import models


class RunEvent(models.Model):
    """One event of a run. ``seq`` is 1, 2, 3 … per run, in commit order."""

    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="events", db_index=False)
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=32)
    payload = models.JSONField(default=dict)
    ts = models.DateTimeField(help_text="Commit time of the change (UTC).")

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="runevent_run_seq")]
        indexes = [models.Index(fields=["ts"], name="runevent_ts")]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.type}"


class ConnectionTicket(models.Model):
    """A single-use, short-lived credential for one WebSocket handshake (realtime.access.tickets).

    Only the ticket's SHA-256 is stored: the table never holds a usable credential.
    """

    key_hash = models.CharField(max_length=64, primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    expires_at = models.DateTimeField(db_index=True)
    # SHA-256 of the API token the ticket was asked for with ("": a browser session).
    token_hash = models.CharField(max_length=64, blank=True, default="")

    def __str__(self) -> str:
        return f"ticket of user {self.user_id} until {self.expires_at:%H:%M:%S}"
