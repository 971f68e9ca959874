from django.core.management.base import BaseCommand

from runs.reaper import reap_stuck_runs


class Command(BaseCommand):
    help = "Fail runs stuck in processing and re-dispatch queued runs nobody picked up."

    def add_arguments(self, parser):
        parser.add_argument(
            "--stale-after",
            type=float,
            default=None,
            help="Seconds without progress before a run counts as stuck (default: the setting).",
        )

    def handle(self, *args, stale_after=None, **options):
        report = reap_stuck_runs(stale_after=stale_after)
        failed, redispatched = len(report.failed), len(report.redispatched)
        line = f"failed {failed} stuck run(s), re-dispatched {redispatched} queued run(s)"
        if report.cancelled:
            line += f", cancelled {len(report.cancelled)} stuck run(s) whose cancel was requested"
        self.stdout.write(line)
