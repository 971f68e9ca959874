from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from realtime.events.retention import prune_run_events


class Command(BaseCommand):
    help = "Delete run events older than the retention period (REALTIME_EVENT_RETENTION_DAYS)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=float,
            default=None,
            help=(
                "Keep this many days of events "
                f"(default: the setting, {settings.REALTIME_EVENT_RETENTION_DAYS:g})."
            ),
        )

    def handle(self, *args, days=None, **options):
        if days is not None and not days >= 0:  # also refuses NaN
            raise CommandError("--days must be a number of days, 0 or more")
        deleted = prune_run_events(days=days)
        self.stdout.write(f"deleted {deleted} run event(s)")
