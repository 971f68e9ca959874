"""The per-run event log: every observable change, with its sequence number."""

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
