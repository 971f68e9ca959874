from urllib.parse import urlparse

from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "observability"
    verbose_name = "Observability"

    def ready(self) -> None:
        from django.conf import settings

        from observability import redaction, sentry

        redaction.remember_secrets(
            [
                settings.SECRET_KEY,
                settings.METRICS_TOKEN,
                settings.SENTRY_DSN,
                settings.DATABASES["default"].get("PASSWORD") or "",
                urlparse(settings.REDIS_URL).password or "",
                urlparse(settings.CELERY_BROKER_URL).password or "",
            ]
        )
        sentry.init(
            dsn=settings.SENTRY_DSN,
            environment=settings.SENTRY_ENVIRONMENT,
            traces_sample_rate=settings.SENTRY_TRACES_SAMPLE_RATE,
        )
