"""Error reports to Sentry, from web and worker processes, when SENTRY_DSN is set.

Off when it is unset: sentry-sdk is not even imported. Events are scrubbed
with the same redaction as the logs before they leave the process, and carry
no personal data (sentry-sdk's default).
"""

from __future__ import annotations

from typing import Any

from observability.redaction import redact


def init(*, dsn: str, environment: str, traces_sample_rate: float = 0.0, **options: Any) -> bool:
    """Start reporting; False (and nothing imported) without a DSN."""
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        traces_sample_rate=traces_sample_rate,
        before_send=scrub,
        before_breadcrumb=scrub,
        **options,
    )
    return True


def scrub(event: dict[str, Any], hint: Any = None) -> dict[str, Any]:
    """Every string in the event, redacted (a token in an exception message, a DSN in a URL)."""
    return _scrub(event)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value
