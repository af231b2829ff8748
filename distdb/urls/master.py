"""Master URLs: the admin and its cluster dashboard. Internal APIs (/internal/) are served by
master_app.internal_api."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from master_app.dashboard import dashboard_view

admin.site.site_header = "distdb master"
admin.site.site_title = "distdb master"
admin.site.index_template = "admin/master_app/index.html"  # links the cluster dashboard

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="dashboard"),
    path("admin/", admin.site.urls),
]
