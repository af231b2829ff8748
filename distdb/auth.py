"""RS256 JSON Web Tokens between servers and for the public API (DESIGN §7).

The master holds the private key and signs; every other node verifies with the
public key, loaded once and cached. Verification pins RS256 (so neither ``alg:
none`` nor an HS256 token "signed" with the public key passes), requires every
claim, and checks the audience and the role. Tokens are long-lived and signed
once (``manage.py sign_jwt`` / ``issue_api_token``), never per request; verified
tokens are cached until they expire because the hot path sees the same token on
every request.

Time comes from the module's ``clock`` (``time.time``), read at each call, so that tests
move it forward instead of sleeping (CONVENTIONS §12).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings

from distdb.errors import (
    TokenExpired,
    TokenInvalid,
    TokenWrongAudience,
    TokenWrongRole,
    Unauthenticated,
)
from distdb.files import private_dir, write_private

ALGORITHM = "RS256"
SERVER_ROLES = ("master", "tablet", "client")
API_ROLE = "api"
API_AUDIENCE_SUFFIX = "-api"
DEFAULT_SERVER_TTL_S = 365 * 24 * 3600
_REQUIRED = ["exp", "iat", "sub", "aud", "role"]

clock: Callable[[], float] = time.time
"""Seconds since the epoch: when tokens are issued and when they expire. Tests replace it."""


@dataclass(frozen=True, slots=True)
class Claims:
    sub: str
    role: str
    aud: str
    iat: int
    exp: int
    jti: str | None = None
    url: str | None = None  # a tablet's: the only URL it may register (issue #9)


# --- keys -------------------------------------------------------------------------------------


def generate_key_pair(private_path: Path, public_path: Path, *, overwrite: bool = False) -> bool:
    """Write an RSA-2048 key pair (private key mode 0600). Returns False if it already exists."""
    if private_path.exists() and not overwrite:
        return False
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(private_path, pem)
    private_dir(public_path.parent)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    private_key.cache_clear()
    public_key.cache_clear()
    return True


@lru_cache(maxsize=1)
def private_key() -> rsa.RSAPrivateKey:
    path = Path(settings.DISTDB_PRIVATE_KEY_FILE)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise Unauthenticated(f"no private key at {path}; run manage.py generate_keys") from None
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@lru_cache(maxsize=1)
def public_key() -> rsa.RSAPublicKey:
    path = Path(settings.DISTDB_PUBLIC_KEY_FILE)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise Unauthenticated(f"no public key at {path}; run manage.py generate_keys") from None
    assert isinstance(key, rsa.RSAPublicKey)
    return key


# --- signing ----------------------------------------------------------------------------------


def server_audience() -> str:
    return settings.DISTDB_CLUSTER


def api_audience() -> str:
    return settings.DISTDB_CLUSTER + API_AUDIENCE_SUFFIX


def token_sign(
    sub: str,
    role: str,
    *,
    audience: str | None = None,
    ttl_s: int = DEFAULT_SERVER_TTL_S,
    jti: str | None = None,
    url: str | None = None,
) -> str:
    """Sign a token with the master's private key (master-only: other nodes lack the key).

    ``url``: a tablet server's URL, bound into its token; the master refuses a link whose
    hello registers any other (so a stolen tablet token cannot redirect clients)."""
    if role not in (*SERVER_ROLES, API_ROLE):
        raise ValueError(f"unknown role {role!r}")
    now = int(clock())
    claims = {
        "sub": sub,
        "role": role,
        "aud": audience or (api_audience() if role == API_ROLE else server_audience()),
        "iat": now,
        "exp": now + ttl_s,
        "jti": jti or uuid.uuid4().hex,
    }
    if url is not None:
        claims["url"] = url
    return jwt.encode(claims, private_key(), algorithm=ALGORITHM)


_master_token: tuple[str, float] | None = None
MASTER_TOKEN_TTL_S = 24 * 3600


def master_token() -> str:
    """The master's own server token for calls to tablet servers (master only: it holds
    the key). Signed once and reused until an hour before it expires: never per request."""
    global _master_token
    if _master_token is None or _master_token[1] - clock() < 3600:
        token = token_sign(settings.DISTDB_NODE_ID, "master", ttl_s=MASTER_TOKEN_TTL_S)
        _master_token = (token, clock() + MASTER_TOKEN_TTL_S)
    return _master_token[0]


# --- verification -----------------------------------------------------------------------------

_verified: dict[tuple[str, str], Claims] = {}
_VERIFIED_MAX = 4096


def token_verify(token: str, *, roles: Iterable[str], audience: str | None = None) -> Claims:
    """Verify a token's signature (RS256 only), expiry, audience and role.

    Raises ``TokenInvalid``, ``TokenExpired``, ``TokenWrongAudience`` or
    ``TokenWrongRole``; never returns claims that failed a check.
    """
    audience = audience or server_audience()
    allowed = tuple(roles)
    cached = _verified.get((token, audience))
    if cached is None:
        cached = _decode(token, audience)
        if len(_verified) >= _VERIFIED_MAX:
            _verified.clear()
        _verified[(token, audience)] = cached
    # PyJWT checked the expiry against the wall clock when it decoded the token; a cached
    # token is checked here on every use, against ``clock`` (the same rule: exp <= now).
    if cached.exp <= clock():
        _verified.pop((token, audience), None)
        raise TokenExpired()
    if cached.role not in allowed:
        raise TokenWrongRole(
            f"role {cached.role!r} may not do this (allowed: {', '.join(allowed)})",
            role=cached.role,
        )
    return cached


def _decode(token: str, audience: str) -> Claims:
    if not token or not isinstance(token, str):
        raise Unauthenticated()
    try:
        claims = jwt.decode(
            token,
            public_key(),
            algorithms=[ALGORITHM],
            audience=audience,
            options={"require": _REQUIRED},
        )
    except jwt.ExpiredSignatureError:
        raise TokenExpired() from None
    except jwt.InvalidAudienceError:
        raise TokenWrongAudience() from None
    except jwt.PyJWTError as exc:
        raise TokenInvalid(f"the token is not valid: {exc}") from None
    try:
        return Claims(
            sub=str(claims["sub"]),
            role=str(claims["role"]),
            aud=str(claims["aud"]),
            iat=int(claims["iat"]),
            exp=int(claims["exp"]),
            jti=str(claims["jti"]) if claims.get("jti") else None,
            url=str(claims["url"]) if claims.get("url") else None,
        )
    except (TypeError, ValueError):
        raise TokenInvalid("the token's claims are malformed") from None


def bearer_token(header: str | bytes | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or raise Unauthenticated."""
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    if not header:
        raise Unauthenticated("send Authorization: Bearer <token>")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send Authorization: Bearer <token>")
    return token.strip()


def own_token() -> str:
    """This node's server token, written by the cluster command or ``sign_jwt --out``.

    Rotation without a restart: the file is read again whenever it changes (its mtime,
    size or inode; ``write_private`` renames a new file over it), so every call that
    builds an ``Authorization`` header sends the current token. One ``stat`` per call,
    about a microsecond. ``DISTDB_TOKEN`` in the environment overrides the file.
    """
    env = os.environ.get("DISTDB_TOKEN")
    if env:
        return env.strip()
    path = str(settings.DISTDB_TOKEN_FILE)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise Unauthenticated(
            f"no token for this node at {path}; sign one with manage.py sign_jwt"
        ) from None
    return _own_token(path, (st.st_mtime_ns, st.st_size, st.st_ino))


@lru_cache(maxsize=4)
def _own_token(path: str, stamp: tuple[int, int, int]) -> str:
    """The token in ``path`` as of ``stamp`` (a new stamp reads the file again)."""
    try:
        return Path(path).read_text().strip()
    except FileNotFoundError:
        raise Unauthenticated(
            f"no token for this node at {path}; sign one with manage.py sign_jwt"
        ) from None
