from django.apps import AppConfig


class ClientAppConfig(AppConfig):
    name = "client_app"
    verbose_name = "distdb client server"
