"""Tablet server URLs: the admin. Its internal API (/internal/) is tablet_app.internal_api."""

from django.conf import settings
from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

admin.site.site_header = f"distdb tablet server {settings.DISTDB_NODE_ID}"
admin.site.site_title = "distdb tablet"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
]
