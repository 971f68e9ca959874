"""The Celery application, in Celery's Django layout.

The broker comes from CELERY_BROKER_URL or REDIS_URL (see settings); tasks are
discovered in each installed app's ``tasks`` module.
"""

import os

from celery import Celery

from server import kombu_patch

# Before any broker connection: a Redis restart must not end the worker (see the module).
kombu_patch.apply()

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "quikday.settings")

app = Celery("quikday")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
