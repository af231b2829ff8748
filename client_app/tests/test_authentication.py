"""API tokens: missing, invalid, expired, revoked, wrong role or audience."""

from __future__ import annotations

import threading
import uuid

from distdb.auth import api_audience, token_sign

from .. import authentication

ROW = "/api/v1/tables/products/rows/1"


async def test_a_request_without_a_token_is_a_401(api, cluster):
    answer = await api("GET", ROW, token=None)
    assert (answer.status, answer.error_code) == (401, "unauthenticated")
    assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_a_garbage_token_is_a_401(api, cluster):
    answer = await api("GET", ROW, token="not.a.jwt")
    assert (answer.status, answer.error_code) == (401, "token_invalid")


async def test_an_expired_token_is_a_401(api, cluster):
    answer = await api("GET", ROW, token=token_sign("alice", "api", ttl_s=-60))
    assert (answer.status, answer.error_code) == (401, "token_expired")


async def test_a_server_token_is_a_403(api, cluster):
    answer = await api("GET", ROW, token=token_sign("tablet-1", "tablet"))
    assert (answer.status, answer.error_code) == (403, "token_wrong_audience")
    answer = await api("GET", ROW, token=token_sign("c", "client", audience=api_audience()))
    assert (answer.status, answer.error_code) == (403, "token_wrong_role")
    assert "www-authenticate" not in answer.headers


async def test_a_revoked_token_is_a_401(api, cluster):
    jti = uuid.uuid4().hex
    cluster.revoked.add(jti)
    answer = await api("GET", ROW, token=token_sign("mallory", "api", jti=jti))
    assert (answer.status, answer.error_code) == (401, "token_revoked")
    assert (await api("GET", ROW)).status == 404  # other tokens still work


async def test_the_revocation_list_is_fetched_once_then_at_most_every_ten_seconds(api, cluster):
    for _ in range(5):
        await api("GET", ROW)
    assert cluster.master_calls["revoked"] == 1


async def test_a_newly_revoked_token_is_refused_after_the_refresh(api, cluster):
    jti = uuid.uuid4().hex
    token = token_sign("mallory", "api", jti=jti)
    assert (await api("GET", ROW, token=token)).status == 404
    cluster.revoked.add(jti)
    authentication.revoked_tokens.get().checked_at -= authentication.REVOKED_REFRESH_S
    await api("GET", ROW)  # starts the refresh in the background
    task = authentication.revoked_tokens.get()._task
    assert task is not None
    await task
    assert (await api("GET", ROW, token=token)).error_code == "token_revoked"


async def test_the_last_revocation_list_is_kept_while_the_master_is_down(api, cluster):
    jti = uuid.uuid4().hex
    cluster.revoked.add(jti)
    token = token_sign("mallory", "api", jti=jti)
    assert (await api("GET", ROW, token=token)).error_code == "token_revoked"
    await cluster.master.stop()
    authentication.revoked_tokens.get().checked_at -= authentication.REVOKED_REFRESH_S
    await api("GET", ROW, token=token)
    await authentication.revoked_tokens.get()._task
    assert (await api("GET", ROW, token=token)).error_code == "token_revoked"


async def test_no_token_passes_while_the_revocation_list_has_never_been_loaded(api, cluster):
    cluster.revoked_failures = 2
    answer = await api("GET", ROW)
    assert (answer.status, answer.error_code) == (503, "revocations_unavailable")
    assert answer.json["error"]["retryable"] is True
    assert answer.headers["retry-after"] == "1"
    assert (await api("GET", ROW)).error_code == "revocations_unavailable"
    assert cluster.master_calls["revoked"] == 2  # each request asked again at once


async def test_the_request_after_a_failed_first_fetch_fetches_again_at_once(api, cluster):
    jti = uuid.uuid4().hex
    cluster.revoked.add(jti)
    cluster.revoked_failures = 1
    token = token_sign("mallory", "api", jti=jti)
    assert (await api("GET", ROW, token=token)).error_code == "revocations_unavailable"
    assert (await api("GET", ROW, token=token)).error_code == "token_revoked"
    assert (await api("GET", ROW)).status == 404
    assert cluster.master_calls["revoked"] == 2


async def test_a_request_without_a_token_is_a_401_even_without_the_revocation_list(api, cluster):
    cluster.revoked_failures = 1
    answer = await api("GET", ROW, token=None)
    assert (answer.status, answer.error_code) == (401, "unauthenticated")


async def test_the_schema_and_docs_need_no_token(api, cluster):
    assert (await api("GET", "/api/v1/schema/", token=None)).status == 200
    assert (await api("GET", "/api/docs/", token=None)).status == 200


async def test_authentication_runs_on_the_event_loop_without_a_thread_hop(
    api, cluster, monkeypatch
):
    """On the lean read path and through DRF's views alike."""
    threads = []
    original = authentication.token_verify

    def spy(*args, **kwargs):
        threads.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(authentication, "token_verify", spy)
    cluster.put("products", "int", 1, {})
    assert (await api("GET", ROW)).status == 200
    assert (await api("GET", "/api/v1/tables/products/rows?limit=1")).status == 200
    assert threads == [threading.get_ident()] * 2
