"""The master's end of the tablet link: a Channels WebSocket consumer per tablet server.

The tablet's link agent dials in with its tablet-role JWT in the ``Authorization``
header; a missing, wrong or revoked token is refused before the server is registered,
and so is a hello whose URL is not the one bound into the token (``url`` claim): a
stolen tablet token cannot point clients elsewhere. A token revoked while linked is
noticed at the next heartbeat and the link is closed (4401 ``token_revoked``).

Revoked server tokens: after the welcome, and whenever the list changes (a
``link.revoked`` event from ``server_tokens_revoke``, or a change seen at a heartbeat,
so a lost event costs one heartbeat), the consumer sends the tablet the whole list,
signed; the tablet refuses those tokens on its internal API. The
consumer joins the group ``tablet.<node_id>`` so that master code running anywhere
(a Celery task, a management command) can send it commands through the channel layer
(``master_app.services.link.link_call``); replies travel back to the caller's reply
channel. It also joins ``tablets`` to push every new metadata version.

What it sends itself (the welcome, metadata pushes) it signs, as the senders of commands
do (``distdb.link_signing``): the tablet accepts nothing unsigned. From the channel layer
it takes only the ``link.*`` events: a ``websocket.*`` event put into Redis would
otherwise pass for a message from the tablet.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import OperationalError
from pydantic import ValidationError

from distdb.auth import Claims, bearer_token, token_verify
from distdb.errors import (
    DistdbError,
    TokenInvalid,
    TokenRevoked,
    TokenUrlMismatch,
    ValidationFailed,
)
from distdb.link_signing import link_seal
from distdb.protocol import (
    Heartbeat,
    Hello,
    LeaseGrant,
    Reply,
    ServerTokensRevoked,
    Welcome,
    tablet_to_master_adapter,
)
from master_app.services.link import ALL_TABLETS, tablet_group
from master_app.services.metadata import metadata_current, metadata_version_current
from master_app.services.replicas import (
    amnesia_settle,
    deposed_settle,
    failover_check,
    lease_grant,
)
from master_app.services.servers import (
    tablet_server_connect,
    tablet_server_disconnect,
    tablet_server_heartbeat,
)
from master_app.services.tokens import server_tokens_revoked

log = logging.getLogger(__name__)
# All that master code may send us; ``link.revoked`` only asks us to read the list ourselves.
CHANNEL_EVENTS = frozenset({"link.command", "link.metadata", "link.revoked"})
PUSH_TTL_S = 60.0  # a signed push or welcome older than this is refused by the tablet


class TabletLinkConsumer(AsyncWebsocketConsumer):
    """One tablet server's link: registration, heartbeats, metadata pushes, command relay."""

    node_id: str | None = None
    claims: Claims | None = None
    pending: dict[str, str]
    revoked_sent: list[str] | None = None  # the last list of revoked tokens sent

    async def __call__(self, scope, receive, send) -> None:
        """Mark what comes from the socket, so ``dispatch`` can tell it from channel events."""
        marker = self._from_socket = object()

        async def from_socket() -> dict[str, Any]:
            return {**(await receive()), "_from": marker}

        await super().__call__(scope, from_socket, send)

    async def dispatch(self, message) -> None:
        from_socket = message.pop("_from", None) is self._from_socket
        kind = message.get("type", "")
        if from_socket != kind.startswith("websocket.") or (
            not from_socket and kind not in CHANNEL_EVENTS
        ):
            log.warning("dropped a %r event that did not come from the socket", kind)
            return
        await super().dispatch(message)

    async def _send_signed(self, body: dict[str, Any], nonce: str | None = None) -> None:
        assert self.node_id is not None
        sealed = link_seal(body, self.node_id, ttl_s=PUSH_TTL_S, nonce=nonce)
        await self.send(bytes_data=orjson.dumps(sealed))

    async def connect(self) -> None:
        self.pending = {}
        headers = dict(self.scope.get("headers") or [])
        try:
            claims = token_verify(bearer_token(headers.get(b"authorization")), roles=("tablet",))
            revoked = await database_sync_to_async(server_tokens_revoked)()
            if claims.jti is None:
                raise TokenInvalid("a server token without an id (jti) cannot be revoked")
            if claims.jti in revoked:
                raise TokenRevoked()
        except DistdbError as exc:
            await self.accept()
            await self._refuse(exc)
            return
        self.node_id, self.claims = claims.sub, claims
        await self.accept()

    async def _refuse(self, exc: DistdbError) -> None:
        """Say why, then close: 4401 (unauthenticated, e.g. revoked) or 4403 (forbidden)."""
        log.warning("refused the tablet link of %s: %s", self.node_id or "?", exc.code)
        code = 4401 if exc.status == 401 else 4403
        await self._unlink(code)  # at once: the close handshake may take a while
        await self.send(bytes_data=orjson.dumps(exc.as_dict()))
        await self.close(code=code, reason=exc.code)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.node_id is None:
            return
        try:
            message = tablet_to_master_adapter.validate_json(bytes_data or text_data or b"")
        except ValidationError as exc:
            error = ValidationFailed(f"bad link message: {exc.error_count()} error(s)")
            await self.send(bytes_data=orjson.dumps(error.as_dict()))
            return
        if isinstance(message, Hello):
            await self._hello(message)
        elif isinstance(message, Heartbeat):
            try:
                if not await self._revocations_checked():
                    return
                # Behind (a push or a move's hand-over lost to a crash): send it again,
                # before the lease grant that may name that version.
                current = await database_sync_to_async(metadata_version_current)()
                if message.metadata_version < current:
                    await self.link_metadata({})
                if message.sent_at is None:  # an agent without leader leases
                    await database_sync_to_async(tablet_server_heartbeat)(self.node_id)
                else:
                    version = await database_sync_to_async(lease_grant)(self.node_id)
                    grant = LeaseGrant(
                        sent_at=message.sent_at,
                        lease_s=settings.DISTDB_LEADER_LEASE_S,
                        version=version,
                    )
                    await self._send_signed(grant.model_dump(mode="json"))
                # Every heartbeat looks for leaders whose lease has surely ended: a master
                # that hears from no tablet server fails nothing over.
                await database_sync_to_async(failover_check)()
            except OperationalError as exc:  # a busy database must not cut the link
                log.warning("heartbeat of %s not recorded: %s", self.node_id, exc)
        elif isinstance(message, Reply):
            reply_to = self.pending.pop(message.id, None)
            if reply_to:
                await self.channel_layer.send(
                    reply_to, {"type": "link.reply", "body": message.model_dump(mode="json")}
                )

    async def _hello(self, hello: Hello) -> None:
        assert self.node_id is not None and self.claims is not None
        if hello.url != self.claims.url:
            self.node_id = None  # nothing more from this socket: it is closing
            bound = self.claims.url or "no URL"
            await self._refuse(TokenUrlMismatch(f"the token is bound to {bound}, not {hello.url}"))
            return
        await database_sync_to_async(tablet_server_connect)(self.node_id, hello.url)
        await database_sync_to_async(deposed_settle)(self.node_id, hello.last_seq)
        if hello.metadata_version == 0:  # a new database: it holds nothing any more
            await database_sync_to_async(amnesia_settle)(self.node_id)
        await self.channel_layer.group_add(tablet_group(self.node_id), self.channel_name)
        await self.channel_layer.group_add(ALL_TABLETS, self.channel_name)
        welcome = Welcome(heartbeat_s=settings.DISTDB_HEARTBEAT_S)
        await self._send_signed(welcome.model_dump(mode="json"), nonce=hello.nonce)
        # Before the metadata: the tablet serves nothing until it knows the revocations.
        if not await self._revocations_checked():
            return
        await self.link_metadata({})
        log.info(
            "tablet server %s linked from %s (last_seq=%s)", self.node_id, hello.url, hello.last_seq
        )

    async def disconnect(self, code) -> None:
        await self._unlink(code)

    async def _unlink(self, code: int) -> None:
        """Leave the groups (no more commands or pushes reach us) and mark the server down."""
        if self.node_id is None:
            return
        node_id, self.node_id = self.node_id, None  # nothing more from this socket
        await self.channel_layer.group_discard(tablet_group(node_id), self.channel_name)
        await self.channel_layer.group_discard(ALL_TABLETS, self.channel_name)
        await database_sync_to_async(tablet_server_disconnect)(node_id)
        for reply_to in self.pending.values():
            await self.channel_layer.send(reply_to, {"type": "link.reply", "body": None})
        self.pending.clear()
        log.info("tablet server %s unlinked (code %s)", node_id, code)

    # --- channel-layer events ----------------------------------------------------------------

    async def link_metadata(self, event) -> None:
        """Push the current metadata (sent on hello and after every commit)."""
        if self.node_id is None:  # refused or unlinked; an event that was already queued
            return
        metadata = await database_sync_to_async(metadata_current)()
        await self._send_signed(metadata.model_dump(mode="json"))

    async def link_revoked(self, event) -> None:
        """The revoked server tokens changed (``server_tokens_revoke``): tell the tablet."""
        if self.node_id is None:
            return
        await self._revocations_checked()

    async def _revocations_checked(self) -> bool:
        """Close the link if this tablet's own token is revoked (False); else send the
        revoked list if it changed since last sent. Only the database is believed, never
        the event that asked: whoever writes to Redis can only make us re-read it."""
        assert self.claims is not None
        revoked = await database_sync_to_async(server_tokens_revoked)()
        if self.claims.jti in revoked:
            await self._refuse(TokenRevoked("this tablet server's token has been revoked"))
            return False
        if revoked != self.revoked_sent:
            await self._send_signed(ServerTokensRevoked(revoked=revoked).model_dump(mode="json"))
            self.revoked_sent = revoked
        return True

    async def link_command(self, event) -> None:
        """Relay a command from master code to the tablet; remember where the reply goes."""
        if self.node_id is None:
            await self.channel_layer.send(event["reply_to"], {"type": "link.reply", "body": None})
            return
        self.pending[event["body"]["id"]] = event["reply_to"]
        await self.send(bytes_data=orjson.dumps(event["body"]))
