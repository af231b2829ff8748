"""Public API tokens: RS256 JWTs signed by the master, recorded so they can be revoked."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.utils import timezone

from distdb.auth import API_ROLE, token_sign
from master_app.models import ApiToken

DEFAULT_TTL_DAYS = 365


def api_token_issue(name: str, *, ttl_days: int = DEFAULT_TTL_DAYS) -> tuple[ApiToken, str]:
    """Create a token record and return it with the token string (shown once, never stored)."""
    if not name or len(name) > 100:
        raise ValueError("a token name is 1-100 characters")
    if ttl_days < 1:
        raise ValueError("ttl_days must be at least 1")
    jti = uuid.uuid4().hex
    record = ApiToken.objects.create(
        name=name, jti=jti, expires_at=timezone.now() + timedelta(days=ttl_days)
    )
    token = token_sign(name, API_ROLE, ttl_s=ttl_days * 24 * 3600, jti=jti)
    return record, token


def api_tokens_revoked() -> list[str]:
    """The ids of revoked, not yet expired tokens (client servers reject them)."""
    return list(
        ApiToken.objects.filter(
            revoked_at__isnull=False, expires_at__gt=timezone.now()
        ).values_list("jti", flat=True)
    )


def api_token_revoke(record: ApiToken) -> None:
    if record.revoked_at is None:
        record.revoked_at = timezone.now()
        record.save(update_fields=["revoked_at"])
