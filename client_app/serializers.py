"""DRF serializers of the public REST API: request validation and the OpenAPI schema.

Loaded by the client server role. Request serializers reject unknown fields
(``StrictSerializer``); their custom fields run the plain checks of
``client_app.validation`` (cheap enough for 10,000 rows). Checks that need the table
(key type, allowed columns) are the services'. Response serializers only document the
answers for drf-spectacular: views render plain dicts.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from distdb.errors import ValidationFailed
from distdb.protocol import MAX_RF

from . import validation

MUTATION_OPS = ("insert", "upsert", "set", "delete_cells", "delete_row")
ROW_STATUSES = ("created", "updated", "deleted", "unchanged", "error")

KEY_SCHEMA = {
    "oneOf": [
        {"type": "integer", "format": "int64"},
        {"type": "string", "minLength": 1, "maxLength": 256},
    ],
    "description": "A row key: an integer (64-bit) or a string (1-256 bytes of UTF-8), "
    "as the table's key_type says.",
}
CELLS_SCHEMA = {
    "type": "object",
    "additionalProperties": {},
    "description": "Column name (1-128 characters) -> any JSON value, stored as given.",
    "example": {"product_name": "Wooden train", "price": "£3.42", "number_of_reviews": 13},
}


def _drf_error(exc: ValidationFailed) -> serializers.ValidationError:
    return serializers.ValidationError(
        [e["msg"] for e in exc.detail.get("errors", [])] or [exc.message]
    )


class StrictSerializer(serializers.Serializer):
    """A serializer that rejects fields it does not declare."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


class StrictSerializerSchema(OpenApiSerializerExtension):
    """Documents what a ``StrictSerializer`` enforces, so that the schema tells the truth.

    Unknown fields are refused (``additionalProperties: false``), lists and cells that
    refuse to be empty say so (``minItems``/``minProperties``), and a PATCH body is
    validated whole (drf-spectacular would document DRF's partial update: all optional).
    A serializer whose valid shapes depend on a field has ``schema_variants``.
    """

    target_class = StrictSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        target = self.target
        if getattr(target, "partial", False):  # our PATCH views never validate partially
            target = copy.copy(target)
            target.partial = False
        schema = auto_schema._map_serializer(target, direction, bypass_extensions=True)
        schema["additionalProperties"] = False
        if schema.get("description") == inspect.getdoc(StrictSerializer):
            del schema["description"]  # inherited by every request body: says nothing there
        properties = schema.get("properties", {})
        for name, field in target.fields.items():
            if name not in properties or getattr(field, "allow_empty", True):
                continue
            if isinstance(field, CellsField):
                properties[name] = {**properties[name], "minProperties": 1}
            elif isinstance(field, serializers.ListField | serializers.ListSerializer):
                properties[name] = {**properties[name], "minItems": 1}
        variants = getattr(target, "schema_variants", None)
        return variants(schema) if variants is not None else schema


@extend_schema_field(KEY_SCHEMA)
class KeyField(serializers.Field):
    def to_internal_value(self, data: Any) -> int | str:
        try:
            return validation.user_key(data, "")
        except ValidationFailed as exc:
            raise _drf_error(exc) from None

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field(CELLS_SCHEMA)
class CellsField(serializers.Field):
    def __init__(self, *, allow_empty: bool = True, **kwargs: Any) -> None:
        self.allow_empty = allow_empty
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        try:
            return validation.cells(data, "", allow_empty=self.allow_empty)
        except ValidationFailed as exc:
            raise _drf_error(exc) from None

    def to_representation(self, value: Any) -> Any:
        return value


class ColumnNameField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", validation.MAX_COLUMN_CHARS)
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)


def columns_field(**kwargs: Any) -> serializers.ListField:
    return serializers.ListField(child=ColumnNameField(), allow_empty=False, **kwargs)


# --- errors -------------------------------------------------------------------------------------


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code; branch on this.")
    message = serializers.CharField(help_text="For humans; may change.")
    detail = serializers.DictField(help_text="Structured context (fields, keys, limits...).")
    retryable = serializers.BooleanField(help_text="Whether the same request may succeed later.")


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()


class RowErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    retryable = serializers.BooleanField()


# --- tables -------------------------------------------------------------------------------------


class RfField(serializers.IntegerField):
    """A replication factor: a JSON integer 1..MAX_RF (no "3", 3.0 or true: a typo in a
    script should fail, not be read as something else)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_RF)
        kwargs.setdefault(
            "help_text",
            "Replication factor: copies of each range (a leader and rf-1 followers on other "
            "tablet servers), 1-5. 1: no replicas, no failover.",
        )
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise serializers.ValidationError(f"an integer from 1 to {MAX_RF}")
        value: int = super().to_internal_value(data)
        return value


class TableCreateSerializer(StrictSerializer):
    # \Z, not $ (which also matches before a final newline), and no trimming: a name
    # with spaces or a newline is refused, never silently turned into another name.
    name = serializers.RegexField(
        r"^[A-Za-z0-9_-]+\Z", min_length=1, max_length=64, trim_whitespace=False
    )
    key_type = serializers.ChoiceField(choices=("int", "str"))
    columns = columns_field(required=False, allow_null=True, default=None)
    rf = RfField(required=False, allow_null=True, default=None)


class TableRfSerializer(StrictSerializer):
    rf = RfField()


class TableSerializer(serializers.Serializer):
    name = serializers.CharField()
    key_type = serializers.ChoiceField(choices=("int", "str"))
    columns = serializers.ListField(
        child=serializers.CharField(), allow_null=True, help_text="null: any column is allowed"
    )
    rf = serializers.IntegerField(
        min_value=1, max_value=MAX_RF, help_text="Replication factor: copies of each range."
    )


class TableListSerializer(serializers.Serializer):
    tables = TableSerializer(many=True)


# --- rows ---------------------------------------------------------------------------------------


class RowInSerializer(StrictSerializer):
    key = KeyField(
        required=False, allow_null=True, help_text="Omit (or null) to get a new unique key."
    )
    cells = CellsField()


class RowSerializer(serializers.Serializer):
    key = KeyField()
    cells = CellsField()


class RowFailureSerializer(serializers.Serializer):
    key = KeyField()
    error = RowErrorSerializer()


class RowsReadSerializer(serializers.Serializer):
    rows = RowSerializer(many=True, help_text="The rows found, in the order of the request.")
    missing = serializers.ListField(child=KeyField(), help_text="Requested keys with no row.")
    failed = RowFailureSerializer(many=True, help_text="Keys whose tablet could not answer.")


class ScanPageSerializer(serializers.Serializer):
    rows = RowSerializer(many=True, help_text="In key order.")
    cursor = serializers.CharField(
        allow_null=True, help_text="Pass as ?cursor= for the next page; null when done."
    )


class ScanQuerySerializer(StrictSerializer):
    # Keys are taken as given: " a" is a key of its own, not "a" (no trimming).
    start = serializers.CharField(
        required=False, trim_whitespace=False, help_text="First key (inclusive)."
    )
    end = serializers.CharField(
        required=False, trim_whitespace=False, help_text="End key (exclusive)."
    )
    limit = serializers.IntegerField(
        required=False,
        default=100,
        min_value=1,
        max_value=settings.DISTDB_MAX_SCAN_LIMIT,
        help_text="Rows per page.",
    )
    cursor = serializers.CharField(
        required=False, trim_whitespace=False, help_text="From the previous page."
    )


class RowResultSerializer(serializers.Serializer):
    key = KeyField()
    status = serializers.ChoiceField(choices=ROW_STATUSES)
    error = RowErrorSerializer(allow_null=True)


class RowResultsSerializer(serializers.Serializer):
    results = RowResultSerializer(many=True, help_text="One per row, in request order.")
    failed = serializers.IntegerField(help_text="How many rows failed.")


class RowStatusSerializer(serializers.Serializer):
    key = KeyField()
    status = serializers.ChoiceField(choices=("created", "updated", "deleted", "unchanged"))


class CellsSetSerializer(StrictSerializer):
    cells = CellsField(allow_empty=False)


class MutationSerializer(StrictSerializer):
    op = serializers.ChoiceField(choices=MUTATION_OPS)
    key = KeyField(required=False, help_text="Required except for insert (omit: a new key).")
    cells = CellsField(required=False, help_text="insert, upsert, set")
    columns = columns_field(required=False, help_text="delete_cells")

    NEEDS = {
        "insert": {"cells"},
        "upsert": {"key", "cells"},
        "set": {"key", "cells"},
        "delete_cells": {"key", "columns"},
        "delete_row": {"key"},
    }

    @classmethod
    def schema_variants(cls, schema: dict[str, Any]) -> dict[str, Any]:
        """The schema of a mutation: one object per op, with exactly the fields it takes."""
        properties = schema["properties"]
        variants = []
        for op, needs in cls.NEEDS.items():
            fields = {name: properties[name] for name in sorted(needs | {"key"})}
            if op == "set":
                fields["cells"] = {**fields["cells"], "minProperties": 1}
            variants.append(
                {
                    "type": "object",
                    # a pattern, not a one-value enum: drf-spectacular's enum hook would
                    # merge the five into one component
                    "properties": {"op": {"type": "string", "pattern": f"^{op}$"}, **fields},
                    "required": ["op", *sorted(needs)],
                    "additionalProperties": False,
                }
            )
        return {"oneOf": variants}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        op = attrs["op"]
        errors: dict[str, list[str]] = {}
        for name in self.NEEDS[op] - set(attrs):
            errors[name] = [f"{op} needs {name}"]
        for name in {"cells", "columns"} - self.NEEDS[op]:
            if name in attrs:
                errors[name] = [f"{op} takes no {name}"]
        if op == "set" and "cells" in attrs and not attrs["cells"]:
            errors["cells"] = ["set needs at least one cell"]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class BatchSerializer(StrictSerializer):
    mutations = MutationSerializer(many=True, allow_empty=False)


# --- compatibility endpoint ---------------------------------------------------------------------


class CompatBodySerializer(StrictSerializer):
    ids = serializers.ListField(child=KeyField(), required=False, help_text="Row ids (keys).")
    data = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="add-rows: list of row objects ({id?, column: value...}); set: the cells; "
        "delete-cells: list of column names.",
    )


class CompatQuerySerializer(StrictSerializer):
    queryTitle = serializers.ChoiceField(  # noqa: N815 - the original system's field name
        choices=("read-rows", "add-rows", "set", "delete-cells", "delete-rows")
    )
    queryBody = CompatBodySerializer()  # noqa: N815


class CompatErrorSerializer(serializers.Serializer):
    id = KeyField()
    code = serializers.CharField()
    message = serializers.CharField()
    retryable = serializers.BooleanField()


class CompatAnswerSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=("success", "partial", "error"))
    count = serializers.IntegerField(help_text="Rows read or written successfully.")
    data = serializers.ListField(
        child=serializers.DictField(),
        help_text="read-rows: row objects; writes: {id, status} of each row that succeeded.",
    )
    errors = CompatErrorSerializer(many=True, help_text="Every id that failed, and why.")
    missing = serializers.ListField(child=KeyField(), required=False, help_text="read-rows only")
