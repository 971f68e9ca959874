"""Quik.day Realtime: project configuration (settings, urls, asgi, celery)."""

from quikday.celery import app as celery_app

__all__ = ("celery_app",)
