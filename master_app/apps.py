from django.apps import AppConfig


class MasterAppConfig(AppConfig):
    name = "master_app"
    verbose_name = "distdb master"
