"""Client server URLs: the public REST API under /api/v1/, its schema and docs, the admin."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

admin.site.site_header = f"distdb client server {settings.DISTDB_NODE_ID}"
admin.site.site_title = "distdb client"

urlpatterns = [
    path("", RedirectView.as_view(url="/api/docs/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", include("client_app.urls")),
]
