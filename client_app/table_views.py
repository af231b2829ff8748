"""Views of the public REST API for tables (client server role): list, create, show one,
change its replication factor. Thin, as ``client_app.views``: parse, one service, render.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from distdb.errors import TableNotFound

from . import serializers as s
from . import services, validation
from .api_view import ApiView
from .views import RETRY_AFTER, SYSTEM_TABLE_PREFIX, TABLE, errors, validated


def _users_table(name: str) -> str:
    """The system's own tables are not the users': as if they did not exist."""
    if name.startswith(SYSTEM_TABLE_PREFIX):
        raise TableNotFound(f"no table {name!r}", table=name)
    return name


class TablesView(ApiView):
    @extend_schema(
        operation_id="tables_list",
        summary="List tables",
        parameters=[RETRY_AFTER],
        responses={200: s.TableListSerializer, **errors(503)},
    )
    async def get(self, request) -> Response:
        tables = await services.tables_list()
        return Response(
            {"tables": [t for t in tables if not t["name"].startswith(SYSTEM_TABLE_PREFIX)]}
        )

    @extend_schema(
        operation_id="table_create",
        summary="Create a table",
        description="`rf` (optional, 1-5): copies of each range, a leader and rf-1 followers "
        "on other tablet servers; the cluster's default (`DISTDB_DEFAULT_RF`) if omitted.",
        parameters=[RETRY_AFTER],
        request=s.TableCreateSerializer,
        responses={201: s.TableSerializer, **errors(400, 409, 413, 415, 503)},
    )
    async def post(self, request) -> Response:
        data = validated(s.TableCreateSerializer, self.body(request))
        if data["name"].startswith(SYSTEM_TABLE_PREFIX):
            raise validation.invalid("name", "names starting with _ are reserved for the system")
        return Response(await services.table_create(**data), status=201)


class TableView(ApiView):
    @extend_schema(
        operation_id="table_get",
        summary="Show a table",
        parameters=[TABLE, RETRY_AFTER],
        responses={200: s.TableSerializer, **errors(404, 503)},
    )
    async def get(self, request, table: str) -> Response:
        return Response(await services.table_get(_users_table(table)))

    @extend_schema(
        operation_id="table_rf_set",
        summary="Change a table's replication factor",
        description="Raising `rf` adds followers in the background (the ranges are copied to "
        "other tablet servers; until then they have fewer copies). Lowering it drops "
        "followers at once. The answer is the table with its new `rf`.",
        parameters=[TABLE, RETRY_AFTER],
        request=s.TableRfSerializer,
        responses={200: s.TableSerializer, **errors(400, 404, 413, 415, 503)},
    )
    async def patch(self, request, table: str) -> Response:
        data = validated(s.TableRfSerializer, self.body(request))
        return Response(await services.table_rf_set(_users_table(table), data["rf"]))
