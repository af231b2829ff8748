"""Views of the public REST API under /api/v1/ (client server role).

Thin on purpose (CONVENTIONS §4): parse and validate the request, call one service,
render. Every view is async (``client_app.api_view.ApiView``); the per-row status rules are
``client_app.services.results``; errors are rendered by ``client_app.errors``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from django.http import QueryDict
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from drf_spectacular.views import SpectacularAPIView
from rest_framework.response import Response

from distdb.errors import DistdbError

from . import serializers as s
from . import services, validation
from .api_view import ApiView, JsonRenderer
from .errors import error_headers
from .services import idempotency
from .services.idempotency import Answer, Plan
from .services.results import RowResult, error_brief, results_outcome

ERROR_TEXT = {
    400: "Bad input: invalid_json, validation_failed, invalid_key, column_not_allowed, "
    "invalid_cursor.",
    401: "unauthenticated, token_invalid, token_expired, token_revoked.",
    403: "token_wrong_role, token_wrong_audience.",
    404: "table_not_found, row_not_found (or not_found for an unknown path).",
    409: "row_exists / table_exists (when every row failed so).",
    413: "payload_too_large: body over DISTDB_MAX_BODY_BYTES, or too many rows.",
    415: "unsupported_media_type: send Content-Type: application/json.",
    422: "idempotency_key_reused: this Idempotency-Key named another request.",
    503: "tablet_unavailable / range_frozen / master_unavailable / revocations_unavailable, "
    "with Retry-After.",
}


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    return {
        code: OpenApiResponse(s.ErrorSerializer, description=ERROR_TEXT[code])
        for code in (401, 403, *statuses)
    }


TABLE = OpenApiParameter(
    "table", OpenApiTypes.STR, OpenApiParameter.PATH, description="Table name."
)
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    response=[503],
    description="Seconds to wait before retrying.",
)
KEY = OpenApiParameter(
    "key", OpenApiTypes.STR, OpenApiParameter.PATH, description="Row key (integer tables: digits)."
)


def validated(serializer_class: type, data: Any, **kwargs: Any) -> Any:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def results_response(results: list[RowResult], *, created_status: int = 200) -> Response:
    items = [r.as_dict() for r in results]
    outcome = results_outcome(results, created_status=created_status)
    if outcome.error is not None:
        return _all_failed(outcome.error, {"results": items})
    failed = sum(1 for r in results if r.error is not None)
    return Response({"results": items, "failed": failed}, status=outcome.status)


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer before it is a response: DRF's views wrap it in a ``Response``
    (``as_response``), the lean read path (``client_app.hot_reads``) sends it as it is."""

    body: dict[str, Any]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)

    def as_response(self) -> Response:
        return Response(self.body, status=self.status, headers=self.headers)


def _failed_reply(error: DistdbError, detail: dict[str, Any]) -> Reply:
    body = error.as_dict()
    body["error"]["detail"] = {**error.detail, **detail}
    return Reply(body, error.status, error_headers(error))


def _all_failed(error: DistdbError, detail: dict[str, Any]) -> Response:
    return _failed_reply(error, detail).as_response()


def single(results: list[RowResult]) -> Response:
    result = results[0]
    if result.error is not None:
        raise result.error
    return Response({"key": result.key, "status": result.status})


SYSTEM_TABLE_PREFIX = "_"  # the system's own tables (``_idempotency``): not the users'

IDEMPOTENCY_KEY = OpenApiParameter(
    idempotency.HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Optional, 1-255 printable ASCII characters of your choosing: send the "
    "request again with the same key (after a timeout or a 503) and it is applied at most "
    "once; the first answer is returned again, with `Idempotent-Replayed: true`. The same "
    "key with another request answers 422 `idempotency_key_reused`. Kept 24 hours.",
)

Write = Callable[[Plan, bool], Awaitable[Response]]  # (planned request, replaying) -> answer


async def once(request, plan: Callable[[], Awaitable[Plan]], write: Write) -> Response:
    """Apply a write; with an ``Idempotency-Key``, at most once (``services.idempotency``)."""
    key = idempotency.idempotency_key(request.headers.get(idempotency.HEADER))
    if key is None:
        return await write(await plan(), False)
    fp = request_fingerprint(request)

    async def run(planned: Plan, replaying: bool) -> Answer:
        try:
            response = await write(planned, replaying)
        except DistdbError as exc:
            if exc.status >= 500:
                raise  # not final: the record stays pending and a retry applies it again
            return Answer(exc.status, exc.as_dict(), error_headers(exc))
        headers = {k: v for k, v in response.items() if k.lower() == "retry-after"}
        return Answer(response.status_code, response.data, headers)

    answer = await idempotency.idempotent(request.user.name, key, fp, plan, run)
    return Response(answer.body, status=answer.status, headers=answer.headers)


async def inserts_once(
    request,
    table: str,
    items: list[dict[str, Any]],
    *,
    inserts: Callable[[dict[str, Any]], bool],
    apply: Callable[[list[dict[str, Any]]], Awaitable[list[RowResult]]],
    created_status: int = 200,
) -> Response:
    """Adding rows and ``rows:batch``: without a key as before; with one, the keyless
    inserts get their keys planned (recorded) first, so every attempt inserts the same rows."""
    if request.headers.get(idempotency.HEADER) is None:
        return results_response(await apply(items), created_status=created_status)

    async def plan() -> Plan:
        return await idempotency.keys_planned(table, items, inserts=inserts)

    async def write(planned: Plan, replaying: bool) -> Response:
        replan = functools.partial(
            idempotency.plan_update,
            request.user.name,
            request.headers[idempotency.HEADER],
            request_fingerprint(request),
        )
        results = await idempotency.planned_apply(table, planned, apply, replan)
        return results_response(results, created_status=created_status)

    return await once(request, plan, write)


def request_fingerprint(request) -> str:
    return idempotency.fingerprint(request.method, request.path, request.data or None)


async def nothing_to_plan() -> Plan:
    return {}


def names_keys(query) -> bool:
    """Whether a rows query is a read by keys (else a scan)."""
    return "keys" in query or "key" in query


def keys_param(query) -> list[str] | None:
    """?keys=k1,k2 (comma-separated) and/or ?key=k (repeatable, for keys with commas)."""
    if not names_keys(query):
        return None
    keys = [k for value in query.getlist("keys") for k in value.split(",")]
    return keys + query.getlist("key")


async def row_reply(table: str, key: str) -> Reply:
    """``GET rows/<key>``: the row, or the error saying why not."""
    return Reply(await services.row_read(table, key, raw_cells=True))


async def keys_reply(table: str, query: QueryDict) -> Reply | None:
    """``GET rows?keys=…``: the rows in request order, missing and failed keys named; or
    None when the query names no key (then it is a scan)."""
    keys = keys_param(query)
    if keys is None:
        return None
    extra = sorted(set(query) - {"keys", "key"})
    if extra:
        raise validation.invalid(extra[0], "read by keys takes no other parameter")
    result = await services.rows_read(table, keys, text=True, raw_cells=True)
    body = {
        "rows": [{"key": key, "cells": cells} for key, cells in result.rows],
        "missing": result.missing,
        "failed": [{"key": key, "error": error_brief(e)} for key, e in result.failed],
    }
    codes = {e.code for _, e in result.failed}
    if result.failed and not result.rows and not result.missing and len(codes) == 1:
        return _failed_reply(result.failed[0][1], body)
    return Reply(body)


class RowsView(ApiView):
    @extend_schema(
        operation_id="rows_read_or_scan",
        summary="Read rows by key, or scan a key range",
        description="With `keys` (or repeated `key`): read those rows; the answer keeps the "
        "request order and reports missing keys. Otherwise: scan [start, end) in key order, "
        "`limit` rows per page; pass the answer's `cursor` for the next page. "
        "Integer keys scan in numeric order, string keys in byte order.",
        parameters=[
            TABLE,
            RETRY_AFTER,
            OpenApiParameter("keys", OpenApiTypes.STR, description="Comma-separated keys."),
            OpenApiParameter(
                "key", OpenApiTypes.STR, many=True, description="One key; repeatable."
            ),
            s.ScanQuerySerializer,
        ],
        responses={
            200: PolymorphicProxySerializer(
                component_name="RowsReadOrScanPage",
                serializers=[s.RowsReadSerializer, s.ScanPageSerializer],
                resource_type_field_name=None,
            ),
            **errors(400, 404, 413, 503),
        },
        examples=[
            OpenApiExample(
                "read",
                response_only=True,
                value={
                    "rows": [{"key": 1, "cells": {"price": "£3.42"}}],
                    "missing": [7],
                    "failed": [],
                },
            ),
        ],
    )
    async def get(self, request, table: str) -> Response:
        reply = await keys_reply(table, request.query_params)
        if reply is not None:
            return reply.as_response()
        query = validated(s.ScanQuerySerializer, request.query_params.dict())
        page = await services.rows_scan(table, **query)
        return Response({"rows": page.rows, "cursor": page.cursor})

    @extend_schema(
        operation_id="rows_add",
        summary="Add rows",
        description="A list of rows; a row without a key gets a new unique key. Per-row "
        "results in request order: 201 when every row was created, 200 when some failed "
        "(see each result), the common error's status when every row failed alike.",
        parameters=[TABLE, RETRY_AFTER, IDEMPOTENCY_KEY],
        request=s.RowInSerializer(many=True),
        responses={
            201: s.RowResultsSerializer,
            200: s.RowResultsSerializer,
            **errors(400, 404, 409, 413, 415, 422, 503),
        },
    )
    async def post(self, request, table: str) -> Response:
        rows = validated(s.RowInSerializer, self.body(request), many=True, allow_empty=False)
        return await inserts_once(
            request,
            table,
            rows,
            inserts=lambda row: True,
            apply=lambda items: services.rows_add(table, items),
            created_status=201,
        )


class RowView(ApiView):
    @extend_schema(
        operation_id="row_read",
        summary="Read one row",
        parameters=[TABLE, KEY, RETRY_AFTER],
        responses={200: s.RowSerializer, **errors(400, 404, 503)},
    )
    async def get(self, request, table: str, key: str) -> Response:
        return (await row_reply(table, key)).as_response()

    @extend_schema(
        operation_id="cells_set",
        summary="Set cells of a row (merge)",
        parameters=[TABLE, KEY, RETRY_AFTER, IDEMPOTENCY_KEY],
        request=s.CellsSetSerializer,
        responses={200: s.RowStatusSerializer, **errors(400, 404, 413, 415, 422, 503)},
    )
    async def patch(self, request, table: str, key: str) -> Response:
        data = validated(s.CellsSetSerializer, self.body(request))

        async def write(planned: Plan, replaying: bool) -> Response:
            return single(await services.cells_set(table, [key], data["cells"], text=True))

        return await once(request, nothing_to_plan, write)

    @extend_schema(
        operation_id="row_delete",
        summary="Delete a row",
        parameters=[TABLE, KEY, RETRY_AFTER, IDEMPOTENCY_KEY],
        responses={200: s.RowStatusSerializer, **errors(400, 404, 422, 503)},
    )
    async def delete(self, request, table: str, key: str) -> Response:
        async def write(planned: Plan, replaying: bool) -> Response:
            return single(await services.rows_delete(table, [key], text=True))

        return await once(request, nothing_to_plan, write)


class CellsView(ApiView):
    @extend_schema(
        operation_id="cells_delete",
        summary="Delete cells of a row",
        parameters=[
            TABLE,
            KEY,
            RETRY_AFTER,
            IDEMPOTENCY_KEY,
            OpenApiParameter(
                "columns",
                OpenApiTypes.STR,
                required=True,
                description="Comma-separated column names.",
            ),
        ],
        responses={200: s.RowStatusSerializer, **errors(400, 404, 422, 503)},
    )
    async def delete(self, request, table: str, key: str) -> Response:
        extra = sorted(set(request.query_params) - {"columns"})
        if extra:
            raise validation.invalid(extra[0], "unknown parameter")
        names = [c for value in request.query_params.getlist("columns") for c in value.split(",")]
        columns = validation.columns(names, "columns")

        async def write(planned: Plan, replaying: bool) -> Response:
            return single(await services.cells_delete(table, [key], columns, text=True))

        return await once(request, nothing_to_plan, write)


class BatchView(ApiView):
    @extend_schema(
        operation_id="rows_batch",
        summary="Apply many mutations",
        description="insert (fails with row_exists if the row is there; no key: a new one), "
        "upsert (replace the row's cells), set (merge cells; row_not_found if absent), "
        "delete_cells, delete_row. Mutations of one key apply in request order. "
        "Per-row results, statuses as for adding rows (200 when all succeed).",
        parameters=[TABLE, RETRY_AFTER, IDEMPOTENCY_KEY],
        request=s.BatchSerializer,
        responses={200: s.RowResultsSerializer, **errors(400, 404, 409, 413, 415, 422, 503)},
    )
    async def post(self, request, table: str) -> Response:
        data = validated(s.BatchSerializer, self.body(request))
        return await inserts_once(
            request,
            table,
            data["mutations"],
            inserts=lambda m: m["op"] == "insert",
            apply=lambda items: services.rows_batch(table, items),
        )


class CompatView(ApiView):
    @extend_schema(
        operation_id="send_db_query",
        summary="Compatibility endpoint of the original system (table products)",
        parameters=[RETRY_AFTER],
        request=s.CompatQuerySerializer,
        responses={
            200: s.CompatAnswerSerializer,
            **errors(400, 404, 409, 413, 415),
            503: OpenApiResponse(
                s.CompatAnswerSerializer,
                description="Every id failed as unavailable: the answer plus an `error` object.",
            ),
        },
        examples=[
            OpenApiExample(
                "read-rows",
                request_only=True,
                value={"queryTitle": "read-rows", "queryBody": {"ids": [1, 2, 3]}},
            ),
        ],
    )
    async def post(self, request) -> Response:
        data = validated(s.CompatQuerySerializer, self.body(request))
        answer = await services.db_query(data["queryTitle"], data["queryBody"])
        headers = error_headers(answer.error) if answer.error is not None else None
        return Response(answer.body, status=answer.status, headers=headers)


class SchemaView(SpectacularAPIView):
    """The OpenAPI schema (YAML; ``?format=json`` for JSON). Public: no token needed.

    Its errors (a 405 for a POST...) are rendered in JSON like every other error of the
    API, not in the YAML the schema itself is served in.
    """

    def finalize_response(self, request: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(response, Response) and response.status_code >= 400:
            request.accepted_renderer = JsonRenderer()
            request.accepted_media_type = JsonRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)
