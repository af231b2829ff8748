"""Commands to tablet servers over their link, from any master process (sync callers).

Sync callers share one event loop per process (``_link_loop``). The command goes through
the channel layer (Redis) to the consumer that holds the
tablet's WebSocket, which relays it and routes the reply back to a fresh reply
channel. Every call has a timeout; a tablet that is not linked, or does not answer in
time, raises ``TabletUnavailable``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import uuid
from typing import Any

from channels.layers import get_channel_layer

from distdb.errors import DistdbError, TabletUnavailable, error_from_dict
from distdb.protocol import Command
from master_app.consumers import ALL_TABLETS, tablet_group

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _link_loop() -> asyncio.AbstractEventLoop:
    """One event loop per process, in a daemon thread, for every sync caller's link calls.

    ``async_to_sync`` would run each call on a fresh loop, and channels-redis keeps its
    Redis connections per loop: every call paid for new connections (~20-50 ms), which
    is most of a move's write freeze. On one long-lived loop the connections are reused.
    """
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="distdb-link", daemon=True).start()
            _loop = loop
        return _loop


def run_on_link_loop(coroutine, timeout_s: float) -> Any:
    """Run a coroutine on the link loop from sync code and wait for its result."""
    future = asyncio.run_coroutine_threadsafe(coroutine, _link_loop())
    try:
        return future.result(timeout_s + 5)  # the coroutine has its own, shorter, timeout
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TabletUnavailable(f"no answer on the link in {timeout_s:.0f}s") from None


def link_call(node_id: str, command: Command, *, timeout_s: float = 30.0) -> dict[str, Any]:
    """Send ``command`` to a tablet server and return its reply's result (sync callers)."""
    return run_on_link_loop(link_call_async(node_id, command, timeout_s=timeout_s), timeout_s)


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
    run_on_link_loop(get_channel_layer().group_send(ALL_TABLETS, {"type": "link.metadata"}), 10)


__all__ = ["link_call", "link_push_metadata", "new_command_id", "DistdbError"]
