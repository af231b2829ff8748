"""The Celery app of the master (worker + beat): periodic collection and rebalancing."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "distdb.settings.master")

app = Celery("distdb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
