"""WebSocket routes of the master: the tablet servers' link."""

from django.urls import path

from master_app.consumers import TabletLinkConsumer

websocket_urlpatterns = [path("ws/tablet/", TabletLinkConsumer.as_asgi())]
