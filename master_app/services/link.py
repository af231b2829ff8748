"""Commands to tablet servers over their link, from any master process (sync callers).

Every command is signed by the sending process with the master's key
(``distdb.link_signing``): Redis only carries it, and a message put into Redis by anyone
else is refused by the tablet.

Sync callers share one event loop per process (``_link_loop``). The command goes through
the channel layer (Redis) to the consumer that holds the
tablet's WebSocket, which relays it and routes the reply back to a fresh reply
channel. Every call has a timeout; a tablet that is not linked, or does not answer in
time, raises ``TabletUnavailable``. The caller gets the command's own reply model
(``IngestCommand`` -> ``IngestReply``, see ``distdb.protocol.Command``).

The channel-layer group names live here, not in the consumer, so that services can
talk to tablets without importing the consumer (which imports services).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

from channels.layers import get_channel_layer

from distdb.errors import DistdbError, TabletUnavailable, error_from_dict
from distdb.link_signing import link_seal
from distdb.protocol import Command, Reply, ReplyT

T = TypeVar("T")
ALL_TABLETS = "tablets"  # every linked tablet's consumer (metadata pushes)


def tablet_group(node_id: str) -> str:
    """The group of the consumer holding ``node_id``'s link (commands to that server)."""
    return f"tablet.{node_id}"


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


def run_on_link_loop(coroutine: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """Run a coroutine on the link loop from sync code and wait for its result."""
    future = asyncio.run_coroutine_threadsafe(coroutine, _link_loop())
    try:
        return future.result(timeout_s + 5)  # the coroutine has its own, shorter, timeout
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TabletUnavailable(f"no answer on the link in {timeout_s:.0f}s") from None


def link_call(node_id: str, command: Command[ReplyT], *, timeout_s: float = 30.0) -> ReplyT:
    """Send ``command`` to a tablet server and return its reply's result (sync callers)."""
    return run_on_link_loop(link_call_async(node_id, command, timeout_s=timeout_s), timeout_s)


async def link_call_async(node_id: str, command: Command[ReplyT], *, timeout_s: float) -> ReplyT:
    """Send ``command`` and return the result, checked to be the command's reply model;
    an error reply is raised as its ``DistdbError`` (with the server in its detail)."""
    layer = get_channel_layer()
    reply_channel = await layer.new_channel()
    # Sealed here, by the sender, before it crosses Redis: the tablet verifies it came
    # from a master process (``distdb.link_signing``). It may wait in Redis up to the
    # channel layer's expiry; the call's own timeout bounds the rest.
    body = link_seal(command.model_dump(mode="json"), node_id, ttl_s=timeout_s + 30)
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
    answer = event.get("body")
    if answer is None:
        raise TabletUnavailable(f"tablet server {node_id} disconnected", server=node_id)
    reply = Reply.model_validate(answer)
    if not reply.ok:
        err = reply.error.model_dump() if reply.error else {}
        raise error_from_dict({"error": {**err, "detail": {"server": node_id}}})
    if not isinstance(reply.result, command.reply_model):
        answered = reply.result.type if reply.result else "nothing"
        raise DistdbError(
            f"tablet server {node_id} answered {command.type} with {answered}", server=node_id
        )
    return cast(ReplyT, reply.result)


def new_command_id() -> str:
    return uuid.uuid4().hex


def link_push_metadata() -> None:
    """Ask every linked tablet server's consumer to push the current metadata."""
    run_on_link_loop(get_channel_layer().group_send(ALL_TABLETS, {"type": "link.metadata"}), 10)


def link_push_revoked() -> None:
    """Ask every linked tablet server's consumer to push the revoked server tokens."""
    run_on_link_loop(get_channel_layer().group_send(ALL_TABLETS, {"type": "link.revoked"}), 10)


__all__ = [
    "ALL_TABLETS",
    "link_call",
    "link_call_async",
    "link_push_metadata",
    "link_push_revoked",
    "new_command_id",
    "run_on_link_loop",
    "tablet_group",
]
