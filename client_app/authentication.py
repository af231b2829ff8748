"""API token authentication of the public REST API (client server role, DESIGN §7).

``Authorization: Bearer <token>``: an RS256 JWT with role ``api`` and the cluster's API
audience, signed by the master (``manage.py issue_api_token``). Verification is CPU-only
with the cached public key (``distdb.auth.token_verify`` also caches verified tokens), so
the base view runs it inline on the event loop, without a thread hop.

Revocation: the master publishes the ids (``jti``) of revoked tokens. The set is fetched
on first use (that request waits for it), then refreshed in the background at most every
``REVOKED_REFRESH_S``; if the master is unreachable the last set is kept. It fails
closed: until a set has been loaded once, every token is answered 503
``revocations_unavailable`` (retryable), and each request tries the fetch again at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from distdb.auth import API_ROLE, Claims, api_audience, bearer_token, token_verify
from distdb.errors import DistdbError, RevocationsUnavailable, TokenRevoked, Unavailable

from . import internal_client
from .process_local import ProcessLocal

log = logging.getLogger(__name__)

REVOKED_REFRESH_S = 10.0
REALM = 'Bearer realm="distdb"'


@dataclass(frozen=True, slots=True)
class ApiUser:
    """The caller of an API request: the subject of its token. Nothing is stored."""

    name: str
    claims: Claims
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_active: bool = True

    def __str__(self) -> str:
        return self.name


class AuthFailed(exceptions.AuthenticationFailed):
    """Carries the distdb error (401 unauthenticated/token_*, 403 token_wrong_*) to the handler."""

    def __init__(self, error: DistdbError) -> None:
        super().__init__(error.message, error.code)
        self.error = error
        self.status_code = error.status


class RevokedTokens:
    """The master's set of revoked token ids, refreshed lazily."""

    def __init__(self) -> None:
        self.jtis: frozenset[str] = frozenset()
        self.loaded = False
        self.checked_at = float("-inf")
        self._task: asyncio.Task[None] | None = None

    async def ensure_fresh(self) -> None:
        """Cheap when fresh; until a list is loaded every call waits for a fetch (one at a
        time, shared), later ones refresh behind."""
        if self.loaded and time.monotonic() - self.checked_at < REVOKED_REFRESH_S:
            return
        task = self._refresh_task()
        if not self.loaded:
            await asyncio.shield(task)

    def _refresh_task(self) -> asyncio.Task[None]:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self.checked_at = time.monotonic()  # at the start: one refresh at a time
            self._task = loop.create_task(self._refresh())
        return self._task

    async def _refresh(self) -> None:
        try:
            self.jtis = await internal_client.master_revoked_tokens()
            self.loaded = True
        except DistdbError as exc:
            log.warning(
                "could not refresh revoked API tokens (keeping %d): %s", len(self.jtis), exc
            )

    def is_revoked(self, claims: Claims) -> bool:
        """Raises ``RevocationsUnavailable`` while no list was ever loaded: fail closed."""
        if not self.loaded:
            raise RevocationsUnavailable()
        return claims.jti is not None and claims.jti in self.jtis


revoked_tokens: ProcessLocal[RevokedTokens] = ProcessLocal(RevokedTokens)


def api_user(authorization: str | None) -> ApiUser:
    """The caller named by an ``Authorization`` header's API token, or the distdb error
    saying why not (401/403; 503 ``revocations_unavailable`` until the revoked list loaded).

    One check for every public request: DRF's views (``ApiTokenAuthentication``) and the
    lean read path (``client_app.hot_reads``) both call it.
    """
    claims = token_verify(bearer_token(authorization), roles=(API_ROLE,), audience=api_audience())
    if revoked_tokens.get().is_revoked(claims):
        raise TokenRevoked()
    return ApiUser(claims.sub, claims)


class ApiTokenAuthentication(BaseAuthentication):
    """DRF authentication with API tokens; errors use distdb's codes."""

    def authenticate(self, request) -> tuple[ApiUser, Claims]:
        try:
            user = api_user(request.META.get("HTTP_AUTHORIZATION"))
        except Unavailable:
            raise  # a 503 with Retry-After, not an authentication failure
        except DistdbError as exc:
            raise AuthFailed(exc) from None
        return user, user.claims

    def authenticate_header(self, request) -> str:
        return REALM


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """Documents the API token in the OpenAPI schema."""

    target_class = "client_app.authentication.ApiTokenAuthentication"
    name = "ApiToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An API token: manage.py issue_api_token on the master.",
        }
