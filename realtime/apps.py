from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Realtime"

    def ready(self) -> None:
        from realtime import signals
        from realtime.delivery import failover

        signals.connect()
        # A failed publish wakes the layer probes at once (they would find it at their next check).
        failover.report_publish_failures()
