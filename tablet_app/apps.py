from django.apps import AppConfig


class TabletAppConfig(AppConfig):
    name = "tablet_app"
    verbose_name = "distdb tablet server"
