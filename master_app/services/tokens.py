"""Tokens the master signs, recorded so they can be revoked: public API tokens and
server tokens (tablet and client servers).

Revoked API tokens are refused by the client servers, which fetch the list from the
master's internal API. Revoked server tokens are refused by the master itself (the link
and its internal API) and by every tablet server, which the master tells over the signed
link (on welcome and whenever the list changes; ``master_app.consumers``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from distdb.auth import API_ROLE, token_sign
from master_app.models import ApiToken, ServerToken
from master_app.services.link import link_push_revoked

log = logging.getLogger(__name__)
DEFAULT_TTL_DAYS = 365
SERVER_TOKEN_ROLES = ("tablet", "client")


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


# --- server tokens ----------------------------------------------------------------------------


def server_token_issue(
    node_id: str, role: str, *, ttl_days: int = DEFAULT_TTL_DAYS, url: str | None = None
) -> tuple[ServerToken, str]:
    """Record and sign a server token; a tablet's carries its URL (required)."""
    if not node_id or len(node_id) > 64:
        raise ValueError("a node id is 1-64 characters")
    if role not in SERVER_TOKEN_ROLES:
        raise ValueError(f"a server token's role is one of {', '.join(SERVER_TOKEN_ROLES)}")
    if ttl_days < 1:
        raise ValueError("ttl_days must be at least 1")
    if role == "tablet" and not url:
        raise ValueError("a tablet's token needs its URL (--url): the only one it may register")
    if url is not None and (not url.startswith(("http://", "https://")) or len(url) > 200):
        raise ValueError(f"{url!r} is not an http(s) URL of at most 200 characters")
    jti = uuid.uuid4().hex
    record = ServerToken.objects.create(
        node_id=node_id,
        role=role,
        jti=jti,
        url=url or "",
        expires_at=timezone.now() + timedelta(days=ttl_days),
    )
    token = token_sign(node_id, role, ttl_s=ttl_days * 24 * 3600, jti=jti, url=url)
    return record, token


def server_token_valid(jti: str | None, node_id: str, role: str) -> bool:
    """Whether ``jti`` is a recorded, unrevoked, unexpired token of this node and role."""
    return (
        jti is not None
        and ServerToken.objects.filter(
            jti=jti,
            node_id=node_id,
            role=role,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        ).exists()
    )


def server_tokens_revoked() -> list[str]:
    """The ids of revoked, not yet expired server tokens (expired ones fail anyway)."""
    return sorted(
        ServerToken.objects.filter(
            revoked_at__isnull=False, expires_at__gt=timezone.now()
        ).values_list("jti", flat=True)
    )


def server_tokens_revoke(
    *, jtis: Iterable[str] = (), node_id: str | None = None, keep: Iterable[str] = ()
) -> int:
    """Revoke tokens by id, or every token of a node except ``keep`` (a rotation's new one).

    Returns how many were newly revoked; ``ValueError`` if none matched at all. Linked
    tablets are told at once (best effort: they also get the list on every heartbeat)."""
    jtis, keep = list(jtis), list(keep)
    if not jtis and node_id is None:
        raise ValueError("name the tokens to revoke: by jti or by node")
    tokens = ServerToken.objects.all()
    tokens = tokens.filter(jti__in=jtis) if jtis else tokens.filter(node_id=node_id)
    with transaction.atomic():
        if not tokens.exists():
            raise ValueError(f"no server token matches ({', '.join(jtis) or node_id})")
        revoked = (
            tokens.exclude(jti__in=keep)
            .filter(revoked_at__isnull=True)
            .update(revoked_at=timezone.now())
        )
    if revoked:
        _notify_tablets()
    return revoked


def server_token_revoke(record: ServerToken) -> None:
    if record.revoked_at is None:
        server_tokens_revoke(jtis=[record.jti])


def _notify_tablets() -> None:
    try:
        link_push_revoked()
    except Exception:  # the channel layer being down must not undo the revocation
        log.warning("could not push the revoked server tokens; heartbeats will", exc_info=True)
