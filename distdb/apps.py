from django.apps import AppConfig


class DistdbConfig(AppConfig):
    """The wiring package as an app: system checks and the role-aware runserver."""

    name = "distdb"
    verbose_name = "distdb"

    def ready(self) -> None:
        from distdb import checks  # noqa: F401  (registers the checks)
