"""A tiny HTTP helper for integration tests (stdlib only, JSON in and out)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class Headers(dict[str, str]):
    """Response headers looked up by name in any case (HTTP names are case-insensitive;
    uvicorn sends them lower-case, Daphne capitalised)."""

    def __init__(self, items: Any) -> None:
        super().__init__((k.lower(), v) for k, v in items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


def call(
    method: str, url: str, token: str | None, body: Any = None, timeout: float = 30
) -> tuple[int, Any, dict[str, str]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            raw, status, headers = resp.read(), resp.status, Headers(resp.headers.items())
    except urllib.error.HTTPError as exc:
        raw, status, headers = exc.read(), exc.code, Headers(exc.headers.items())
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = raw
    return status, payload, headers
