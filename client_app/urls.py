"""URLs of the public REST API, mounted at /api/ by distdb.urls.client.

Row keys in a path are one segment (no "/"); read other keys with ?key= or rows:batch.
The schema and the docs page are public; every /api/v1/ endpoint needs an API token.
Anything else under /api/ answers 404 in the error shape.
"""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from . import table_views, views
from .errors import not_found

public = {"authentication_classes": [], "permission_classes": [AllowAny]}

urlpatterns = [
    re_path(r"^v1/tables/?$", table_views.TablesView.as_view(), name="tables"),
    path("v1/tables/<str:table>", table_views.TableView.as_view(), name="table"),
    path("v1/tables/<str:table>/rows", views.RowsView.as_view(), name="rows"),
    path("v1/tables/<str:table>/rows:batch", views.BatchView.as_view(), name="rows-batch"),
    path("v1/tables/<str:table>/rows/<str:key>", views.RowView.as_view(), name="row"),
    path("v1/tables/<str:table>/rows/<str:key>/cells", views.CellsView.as_view(), name="cells"),
    path("v1/client/send-db-query", views.CompatView.as_view(), name="send-db-query"),
    path("v1/schema/", views.SchemaView.as_view(**public), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema", **public), name="docs"),
    re_path(r"^.*$", not_found),
]
