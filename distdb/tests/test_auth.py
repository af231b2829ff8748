"""The token rules of DESIGN §7: RS256 pinned, role and audience checked, every claim required."""

from __future__ import annotations

import base64
import time

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from django.conf import settings

from distdb import auth
from distdb.auth import bearer_token, private_key, public_key, token_sign, token_verify
from distdb.errors import (
    TokenExpired,
    TokenInvalid,
    TokenWrongAudience,
    TokenWrongRole,
    Unauthenticated,
)


def _claims(**overrides):
    now = int(time.time())
    claims = {
        "sub": "tablet-9",
        "role": "tablet",
        "aud": settings.DISTDB_CLUSTER,
        "iat": now,
        "exp": now + 60,
        "jti": "x",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(claims, **kwargs):
    return jwt.encode(claims, private_key(), algorithm="RS256", **kwargs)


class FakeClock:
    """``auth.clock`` for a test: starts at the wall clock and moves only when told."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(auth, "clock", fake)
    return fake


def test_it_accepts_a_valid_token_and_returns_its_claims():
    claims = token_verify(token_sign("tablet-1", "tablet"), roles=("tablet",))
    assert (claims.sub, claims.role, claims.aud) == ("tablet-1", "tablet", settings.DISTDB_CLUSTER)
    assert claims.exp > claims.iat


def test_it_rejects_an_expired_token():
    token = _sign(_claims(iat=int(time.time()) - 120, exp=int(time.time()) - 60))
    with pytest.raises(TokenExpired):
        token_verify(token, roles=("tablet",))


def test_it_rejects_a_token_for_another_audience():
    with pytest.raises(TokenWrongAudience):
        token_verify(_sign(_claims(aud="another-cluster")), roles=("tablet",))


def test_it_rejects_a_token_with_the_wrong_role():
    with pytest.raises(TokenWrongRole):
        token_verify(token_sign("client-1", "client"), roles=("tablet",))


def test_it_rejects_an_api_token_on_the_server_audience():
    with pytest.raises(TokenWrongAudience):
        token_verify(token_sign("alice", "api"), roles=("api", "tablet"))


def test_it_rejects_a_token_signed_with_hs256_using_the_public_key():
    pem = public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # PyJWT refuses to HMAC with a PEM key, so forge the token by hand as an attacker would.
    import hashlib
    import hmac

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = (
        b64(orjson.dumps({"alg": "HS256", "typ": "JWT"})) + b"." + b64(orjson.dumps(_claims()))
    )
    signature = b64(hmac.new(pem, signing_input, hashlib.sha256).digest())
    with pytest.raises(TokenInvalid):
        token_verify((signing_input + b"." + signature).decode(), roles=("tablet",))


def test_it_rejects_an_unsigned_alg_none_token():
    token = jwt.encode(_claims(), key=None, algorithm="none")
    with pytest.raises(TokenInvalid):
        token_verify(token, roles=("tablet",))


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "eyJhbGciOiJSUzI1NiJ9..", "🙂" * 10])
def test_it_rejects_garbage(garbage):
    with pytest.raises(Unauthenticated):
        token_verify(garbage, roles=("tablet",))


@pytest.mark.parametrize("missing", ["sub", "role", "exp", "iat", "aud"])
def test_it_rejects_a_token_missing_a_required_claim(missing):
    with pytest.raises(Unauthenticated):
        token_verify(_sign(_claims(**{missing: None})), roles=("tablet",))


def test_it_rejects_a_token_signed_by_another_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(_claims(), other, algorithm="RS256")
    with pytest.raises(TokenInvalid):
        token_verify(token, roles=("tablet",))


def test_a_cached_token_still_expires(clock):
    token = _sign(_claims(exp=int(clock.now) + 60))
    token_verify(token, roles=("tablet",))  # verified once, now served from the cache
    clock.advance(59)
    assert token_verify(token, roles=("tablet",)).sub == "tablet-9"
    clock.advance(1)  # now == exp: expired
    with pytest.raises(TokenExpired):
        token_verify(token, roles=("tablet",))
    with pytest.raises(TokenExpired):  # and dropped from the cache, not revived
        token_verify(token, roles=("tablet",))


def test_a_token_is_issued_at_the_clocks_time(clock):
    clock.advance(-3600)  # an hour ago, so that PyJWT's wall-clock checks still pass
    claims = token_verify(token_sign("tablet-1", "tablet", ttl_s=7200), roles=("tablet",))
    assert claims.iat == int(clock.now)
    assert claims.exp == int(clock.now) + 7200


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer   "])
def test_it_requires_a_bearer_authorization_header(header):
    with pytest.raises(Unauthenticated):
        bearer_token(header)


def test_it_reads_a_bearer_token():
    assert bearer_token(b"Bearer abc.def") == "abc.def"


def test_the_master_signs_its_own_token_once_and_again_before_it_expires(monkeypatch):
    from distdb import auth

    now = [time.time()]
    monkeypatch.setattr(auth, "clock", lambda: now[0])
    monkeypatch.setattr(auth, "_master_token", None)
    first = auth.master_token()
    assert auth.token_verify(first, roles=("master",)).role == "master"
    now[0] += 3600
    assert auth.master_token() == first  # reused: never signed per request
    now[0] += auth.MASTER_TOKEN_TTL_S - 2 * 3600 + 1
    assert auth.master_token() != first  # renewed an hour before it would expire


def test_a_tablet_token_carries_the_url_the_master_bound_to_it():
    token = token_sign("tablet-1", "tablet", url="http://t1:7001")
    assert token_verify(token, roles=("tablet",)).url == "http://t1:7001"
    assert token_verify(token_sign("client-1", "client"), roles=("client",)).url is None


def test_a_process_picks_up_a_new_token_written_to_its_token_file(settings, tmp_path):
    from distdb.files import write_private

    settings.DISTDB_TOKEN_FILE = tmp_path / "node.jwt"
    write_private(settings.DISTDB_TOKEN_FILE, "first\n")
    assert auth.own_token() == "first"
    assert auth.own_token() == "first"  # read once, then served from the cache
    write_private(settings.DISTDB_TOKEN_FILE, "second\n")  # rotation: no restart
    assert auth.own_token() == "second"
    settings.DISTDB_TOKEN_FILE.unlink()
    with pytest.raises(Unauthenticated):
        auth.own_token()
