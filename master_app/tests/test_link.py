"""The tablet link over Channels: token checks, registration, heartbeats, command relay."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from distdb.auth import token_sign
from distdb.errors import Conflict, DistdbError
from distdb.link_signing import LinkVerifier
from distdb.protocol import (
    CountReply,
    DropCommand,
    ErrorInfo,
    Heartbeat,
    Hello,
    Reply,
    TrimCommand,
    TrimReply,
    dumps,
)
from master_app.models import ServerToken, TabletServer
from master_app.routing import websocket_urlpatterns
from master_app.services.link import link_call_async
from master_app.services.tokens import server_token_issue, server_tokens_revoke

pytestmark = pytest.mark.django_db(transaction=True)
NONCE = "n" * 16


def _communicator(token: str | None) -> WebsocketCommunicator:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    return WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/ws/tablet/", headers=headers)


async def _refused(token: str | None) -> dict:
    comm = _communicator(token)
    connected, _ = await comm.connect()
    assert connected  # accepted only to say why, then closed
    error = orjson.loads(await comm.receive_from())
    closed = await comm.receive_output()
    assert closed["type"] == "websocket.close" and closed["code"] in (4401, 4403)
    await comm.send_to(
        bytes_data=dumps(Hello(url="http://evil", last_seq=0, metadata_version=0, nonce=NONCE))
    )
    await comm.disconnect()
    assert not await database_sync_to_async(TabletServer.objects.exists)()
    return error["error"]


async def test_a_tablet_without_a_token_cannot_join():
    assert (await _refused(None))["code"] == "unauthenticated"


async def test_a_tablet_with_a_garbage_token_cannot_join():
    assert (await _refused("not-a-jwt"))["code"] == "token_invalid"


async def test_a_client_token_cannot_join_as_a_tablet():
    assert (await _refused(token_sign("client-1", "client")))["code"] == "token_wrong_role"


async def test_a_linked_tablet_is_registered_up_and_gets_the_metadata():
    comm = _communicator(token_sign("tablet-7", "tablet", url="http://t7:7000"))
    assert (await comm.connect())[0]
    await comm.send_to(
        bytes_data=dumps(Hello(url="http://t7:7000", last_seq=3, metadata_version=0, nonce=NONCE))
    )
    welcome = orjson.loads(await comm.receive_from())
    revoked = orjson.loads(await comm.receive_from())
    metadata = orjson.loads(await comm.receive_from())
    assert welcome["type"] == "welcome" and metadata["type"] == "metadata"
    assert revoked["type"] == "server_tokens_revoked" and revoked["revoked"] == []
    verifier = LinkVerifier("tablet-7")  # the tablet's check: all are signed for it
    verifier.nonce = NONCE
    assert verifier.open(welcome)["type"] == "welcome"
    assert verifier.open(revoked)["type"] == "server_tokens_revoked"
    assert verifier.open(metadata)["type"] == "metadata"
    server = await database_sync_to_async(TabletServer.objects.get)(node_id="tablet-7")
    assert (server.state, server.url) == ("up", "http://t7:7000")

    await comm.send_to(bytes_data=dumps(Heartbeat(last_seq=4)))
    await comm.disconnect()
    server = await database_sync_to_async(TabletServer.objects.get)(node_id="tablet-7")
    assert server.state == "down"


async def test_a_command_is_relayed_to_the_tablet_and_its_reply_comes_back():
    comm = await _linked("tablet-8")

    call = asyncio.create_task(
        link_call_async("tablet-8", TrimCommand(id="c1", upto_seq=10), timeout_s=5)
    )
    sent = orjson.loads(await comm.receive_from())
    assert sent["type"] == "trim" and sent["id"] == "c1"
    assert sent["sig"]  # signed by the sender, before it went through the channel layer
    result = TrimReply(trimmed=7)
    await comm.send_to(bytes_data=dumps(Reply(id="c1", ok=True, result=result)))
    assert await call == result  # the command's own reply model, not a dict
    await comm.disconnect()


async def _linked(node_id: str, token: str | None = None) -> WebsocketCommunicator:
    comm = _communicator(token or token_sign(node_id, "tablet", url="http://t"))
    await comm.connect()
    await comm.send_to(
        bytes_data=dumps(Hello(url="http://t", last_seq=0, metadata_version=0, nonce=NONCE))
    )
    assert orjson.loads(await comm.receive_from())["type"] == "welcome"
    assert orjson.loads(await comm.receive_from())["type"] == "server_tokens_revoked"
    assert orjson.loads(await comm.receive_from())["type"] == "metadata"
    return comm


async def test_an_error_reply_is_raised_as_its_error_naming_the_server():
    comm = await _linked("tablet-9")
    call = asyncio.create_task(
        link_call_async("tablet-9", DropCommand(id="d1", table="t"), timeout_s=5)
    )
    await comm.receive_from()
    error = ErrorInfo(code="conflict", message="the range is still owned here")
    await comm.send_to(bytes_data=dumps(Reply(id="d1", ok=False, error=error)))
    with pytest.raises(Conflict, match="still owned") as raised:
        await call
    assert raised.value.detail == {"server": "tablet-9"}
    await comm.disconnect()


async def test_a_reply_of_another_commands_model_is_refused():
    comm = await _linked("tablet-10")
    call = asyncio.create_task(
        link_call_async("tablet-10", DropCommand(id="d2", table="t"), timeout_s=5)
    )
    await comm.receive_from()
    await comm.send_to(bytes_data=dumps(Reply(id="d2", ok=True, result=CountReply(rows=3))))
    with pytest.raises(DistdbError, match="answered drop with count_result"):
        await call
    await comm.disconnect()


async def test_a_command_to_an_unlinked_tablet_times_out_as_unavailable():
    from distdb.errors import TabletUnavailable

    with pytest.raises(TabletUnavailable):
        await link_call_async("nobody", TrimCommand(id="c", upto_seq=1), timeout_s=0.2)


async def test_a_heartbeat_from_a_tablet_behind_the_metadata_gets_it_again():
    """A move's hand-over lost to a crash must not leave a server on old metadata until
    the next commit: the heartbeat carries the tablet's version."""
    from master_app.models import MetadataVersion

    await database_sync_to_async(MetadataVersion.objects.create)(version=5, reason="test")
    comm = await _linked("tablet-6")  # welcome, revoked tokens, metadata
    await comm.send_to(bytes_data=dumps(Heartbeat(last_seq=0, metadata_version=5)))
    assert await comm.receive_nothing(timeout=0.3)  # up to date: nothing to send
    await comm.send_to(bytes_data=dumps(Heartbeat(last_seq=0, metadata_version=4)))
    again = orjson.loads(await comm.receive_from())
    assert again["type"] == "metadata" and again["version"] == 5
    await comm.disconnect()


async def test_websocket_events_from_the_channel_layer_are_dropped():
    """Whoever writes to Redis must not speak for the tablet (a forged hello would
    register another URL for it); only ``link.*`` events come from the channel layer."""
    from channels.layers import get_channel_layer

    from master_app.services.link import tablet_group

    comm = await _linked("tablet-11")
    forged = dumps(Hello(url="http://evil", last_seq=0, metadata_version=0, nonce=NONCE))
    layer = get_channel_layer()
    await layer.group_send(
        tablet_group("tablet-11"), {"type": "websocket.receive", "bytes": forged}
    )
    await layer.group_send(tablet_group("tablet-11"), {"type": "websocket.disconnect", "code": 1})
    assert await comm.receive_nothing(timeout=0.3)  # no second welcome: the hello was dropped
    server = await database_sync_to_async(TabletServer.objects.get)(node_id="tablet-11")
    assert (server.url, server.state) == ("http://t", "up")
    await comm.disconnect()


# --- server tokens: revoked ones are refused, a tablet's URL is bound to its token ----------


async def _issue(node_id: str, url: str = "http://t") -> tuple[str, str]:
    record, token = await database_sync_to_async(server_token_issue)(node_id, "tablet", url=url)
    return record.jti, token


async def _revoke(jti: str) -> None:
    await database_sync_to_async(server_tokens_revoke)(jtis=[jti])


async def _closed_with(comm: WebsocketCommunicator) -> tuple[str, int]:
    error = orjson.loads(await comm.receive_from())
    closed = await comm.receive_output()
    assert closed["type"] == "websocket.close"
    return error["error"]["code"], closed["code"]


async def test_a_revoked_tablet_token_cannot_join():
    jti, token = await _issue("tablet-20")
    await _revoke(jti)
    assert (await _refused(token))["code"] == "token_revoked"


async def test_a_linked_tablet_whose_token_is_revoked_is_dropped_at_its_next_heartbeat():
    jti, token = await _issue("tablet-21")
    comm = await _linked("tablet-21", token)
    await _revoke(jti)
    await comm.send_to(bytes_data=dumps(Heartbeat(last_seq=0)))
    assert await _closed_with(comm) == ("token_revoked", 4401)
    server = await database_sync_to_async(TabletServer.objects.get)(node_id="tablet-21")
    assert server.state == "down"


async def test_linked_tablets_are_told_when_a_server_token_is_revoked():
    comm = await _linked("tablet-22")
    other_jti, _ = await _issue("client-9")
    await _revoke(other_jti)  # pushed through the channel layer at once
    pushed = orjson.loads(await comm.receive_from())
    assert pushed["type"] == "server_tokens_revoked" and pushed["revoked"] == [other_jti]
    assert pushed["sig"]
    await comm.send_to(bytes_data=dumps(Heartbeat(last_seq=0)))
    assert await comm.receive_nothing(timeout=0.3)  # already told: not sent again
    await comm.disconnect()


async def test_a_heartbeat_brings_a_revocation_the_push_missed():
    comm = await _linked("tablet-23")
    other_jti, _ = await _issue("client-8")
    await database_sync_to_async(ServerToken.objects.filter(jti=other_jti).update)(
        revoked_at=timezone.now()
    )  # revoked without a push (e.g. Redis was down)
    await comm.send_to(bytes_data=dumps(Heartbeat(last_seq=0)))
    pushed = orjson.loads(await comm.receive_from())
    assert pushed["type"] == "server_tokens_revoked" and pushed["revoked"] == [other_jti]
    await comm.disconnect()


async def test_a_tablet_cannot_register_a_url_other_than_its_tokens():
    comm = _communicator(token_sign("tablet-24", "tablet", url="http://t24:7000"))
    assert (await comm.connect())[0]
    hello = Hello(url="http://evil:80", last_seq=0, metadata_version=0, nonce=NONCE)
    await comm.send_to(bytes_data=dumps(hello))
    assert await _closed_with(comm) == ("token_url_mismatch", 4403)
    assert not await database_sync_to_async(TabletServer.objects.exists)()


async def test_a_tablet_token_without_a_url_cannot_register_any():
    comm = _communicator(token_sign("tablet-25", "tablet"))
    assert (await comm.connect())[0]
    hello = Hello(url="http://t25", last_seq=0, metadata_version=0, nonce=NONCE)
    await comm.send_to(bytes_data=dumps(hello))
    assert await _closed_with(comm) == ("token_url_mismatch", 4403)
    assert not await database_sync_to_async(TabletServer.objects.exists)()
