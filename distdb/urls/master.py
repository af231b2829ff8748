"""Master URLs: the admin. Internal APIs (/internal/) are served by master_app.internal_api."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

admin.site.site_header = "distdb master"
admin.site.site_title = "distdb master"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
]
