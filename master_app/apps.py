from django.apps import AppConfig
from django.db.models.signals import post_migrate


class MasterAppConfig(AppConfig):
    name = "master_app"
    verbose_name = "distdb master"

    def ready(self) -> None:
        from master_app.schedule import schedule_ensure

        post_migrate.connect(schedule_ensure, sender=self)
