"""Management commands: keys, server tokens, API tokens, fixtures."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from distdb.auth import api_audience, token_verify
from fixtures.products import COLUMNS, read_jsonl
from master_app.models import ApiToken, ServerToken
from master_app.services.tokens import server_tokens_revoked


def _run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


def test_generate_keys_keeps_an_existing_pair():
    assert "already exist" in _run("generate_keys")


@pytest.mark.django_db
def test_sign_jwt_prints_a_verifiable_token_for_the_role_and_records_it():
    token = _run("sign_jwt", "tablet-3", "tablet", "--url", "http://t3:7003")
    claims = token_verify(token, roles=("tablet",))
    assert (claims.sub, claims.role, claims.url) == ("tablet-3", "tablet", "http://t3:7003")
    record = ServerToken.objects.get()
    assert (record.node_id, record.role, record.jti, record.url) == (
        "tablet-3",
        "tablet",
        claims.jti,
        "http://t3:7003",
    )
    assert record.revoked_at is None


@pytest.mark.django_db
def test_sign_jwt_requires_the_url_of_a_tablet():
    with pytest.raises(CommandError, match="--url"):
        call_command("sign_jwt", "tablet-3", "tablet")
    assert not ServerToken.objects.exists()


@pytest.mark.django_db
def test_sign_jwt_writes_the_token_to_a_private_file(tmp_path):
    out = tmp_path / "c.jwt"
    _run("sign_jwt", "client-3", "client", "--out", str(out))
    assert token_verify(out.read_text().strip(), roles=("client",)).sub == "client-3"
    assert out.stat().st_mode & 0o077 == 0
    assert ServerToken.objects.get().node_id == "client-3"


@pytest.mark.django_db
def test_revoke_server_token_by_jti_revokes_that_one_only():
    first = token_verify(_run("sign_jwt", "client-3", "client"), roles=("client",))
    second = token_verify(_run("sign_jwt", "client-3", "client"), roles=("client",))
    _run("revoke_server_token", "--jti", first.jti)
    assert server_tokens_revoked() == [first.jti]
    assert ServerToken.objects.get(jti=second.jti).revoked_at is None


@pytest.mark.django_db
def test_revoke_server_token_by_node_can_keep_the_new_token_of_a_rotation():
    old = token_verify(_run("sign_jwt", "client-3", "client"), roles=("client",))
    new = token_verify(_run("sign_jwt", "client-3", "client"), roles=("client",))
    other = token_verify(_run("sign_jwt", "client-4", "client"), roles=("client",))
    _run("revoke_server_token", "--node", "client-3", "--except", new.jti)
    assert server_tokens_revoked() == [old.jti]
    _run("revoke_server_token", "--node", "client-3")
    assert sorted(server_tokens_revoked()) == sorted([old.jti, new.jti])
    assert other.jti not in server_tokens_revoked()


@pytest.mark.django_db
def test_revoke_server_token_refuses_an_unknown_jti_or_node():
    with pytest.raises(CommandError, match="no server token"):
        call_command("revoke_server_token", "--jti", "nope")
    with pytest.raises(CommandError, match="no server token"):
        call_command("revoke_server_token", "--node", "tablet-99")


def test_sign_jwt_refuses_an_unknown_role():
    with pytest.raises(CommandError):
        call_command("sign_jwt", "x", "superuser")


@pytest.mark.django_db
def test_issue_api_token_records_the_token_and_prints_an_api_jwt():
    token = _run("issue_api_token", "alice")
    claims = token_verify(token, roles=("api",), audience=api_audience())
    record = ApiToken.objects.get()
    assert (record.name, record.jti) == ("alice", claims.jti)


def test_generate_fixture_writes_the_requested_rows(tmp_path):
    out = tmp_path / "p.jsonl"
    _run("generate_fixture", "--rows", "25", "--out", str(out), "--no-progress")
    rows = list(read_jsonl(out))
    assert [k for k, _ in rows] == list(range(1, 26))
    assert set(rows[0][1]) == set(COLUMNS)


def test_generate_fixture_rejects_a_bad_row_count(tmp_path):
    with pytest.raises(CommandError):
        call_command("generate_fixture", "--rows", "0", "--out", str(tmp_path / "x"))
