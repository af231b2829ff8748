"""Seed django-celery-beat's periodic tasks from settings (after migrate), once.

Existing entries are left alone so that intervals edited in the admin survive restarts.
"""

from __future__ import annotations

from django.conf import settings


def schedule_ensure(**kwargs) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    wanted = {
        "distdb: collect changes": ("distdb.collect_changes", settings.DISTDB_COLLECT_INTERVAL_S),
        "distdb: rebalance": ("distdb.rebalance", settings.DISTDB_REBALANCE_INTERVAL_S),
        "distdb: repair replicas": ("distdb.repair_replicas", settings.DISTDB_REPAIR_INTERVAL_S),
    }
    for name, (task, seconds) in wanted.items():
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        every, _ = IntervalSchedule.objects.get_or_create(
            every=seconds, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.create(name=name, task=task, interval=every)
