"""Commands to tablet servers over their link, from any master process (sync callers).

The command goes through the channel layer (Redis) to the consumer that holds the
tablet's WebSocket, which relays it and routes the reply back to a fresh reply
channel. Every call has a timeout; a tablet that is not linked, or does not answer in
time, raises ``TabletUnavailable``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from distdb.errors import DistdbError, TabletUnavailable, error_from_dict
from distdb.protocol import Command
from master_app.consumers import ALL_TABLETS, tablet_group


def link_call(node_id: str, command: Command, *, timeout_s: float = 30.0) -> dict[str, Any]:
    """Send ``command`` to a tablet server and return its reply's result."""
    return async_to_sync(link_call_async)(node_id, command, timeout_s=timeout_s)


async def link_call_async(node_id: str, command: Command, *, timeout_s: float) -> dict[str, Any]:
    layer = get_channel_layer()
    reply_channel = await layer.new_channel()
    body = command.model_dump(mode="json")
    await layer.group_send(
        tablet_group(node_id), {"type": "link.command", "reply_to": reply_channel, "body": body}
    )
    try:
        event = await asyncio.wait_for(layer.receive(reply_channel), timeout_s)
    except TimeoutError:
        raise TabletUnavailable(
            f"tablet server {node_id} did not answer {command.type} in {timeout_s:.0f}s",
            server=node_id,
        ) from None
    reply = event.get("body")
    if reply is None:
        raise TabletUnavailable(f"tablet server {node_id} disconnected", server=node_id)
    if not reply.get("ok"):
        err = reply.get("error") or {}
        raise error_from_dict({"error": {**err, "detail": {"server": node_id}}})
    return reply.get("result") or {}


def new_command_id() -> str:
    return uuid.uuid4().hex


def link_push_metadata() -> None:
    """Ask every linked tablet server's consumer to push the current metadata."""
    async_to_sync(get_channel_layer().group_send)(ALL_TABLETS, {"type": "link.metadata"})


__all__ = ["link_call", "link_push_metadata", "new_command_id", "DistdbError"]
