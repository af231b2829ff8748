"""The control plane refuses commands that did not come from the master (issue #9).

Master code sends link commands through Redis (the channel layer) to the consumer that
holds a tablet's WebSocket. Anyone who can reach Redis can put a message there. This
test is that someone: a raw ``channels_redis`` client that sends a tablet the two
commands that would wipe it (metadata that gives its ranges away, then "drop what you
do not own") and checks that the tablet refuses both and keeps its rows.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from channels_redis.core import RedisChannelLayer

from tests.integration.api import call

pytestmark = pytest.mark.integration


def _send_raw(redis_url: str, group: str, body: dict, timeout: float = 15) -> dict | None:
    """``group_send`` a ``link.command`` as the master's code would, without its key;
    returns the tablet's reply body (``None``: nothing answered)."""

    async def run() -> dict | None:
        layer = RedisChannelLayer(hosts=[redis_url])
        reply_channel = await layer.new_channel()
        await layer.group_send(
            group, {"type": "link.command", "reply_to": reply_channel, "body": body}
        )
        try:
            event = await asyncio.wait_for(layer.receive(reply_channel), timeout)
        except TimeoutError:
            return None
        return event.get("body")

    return asyncio.run(run())


def _wipe_commands(node_id: str) -> list[dict]:
    evil_metadata = {
        "type": "metadata",
        "version": 10**9,
        "tables": {"products": {"key_type": "int"}},
        "tablets": [{"table": "products", "start": "", "end": None, "server": "evil", "url": "x"}],
    }
    return [
        {"type": "apply_metadata", "id": uuid.uuid4().hex, "metadata": evil_metadata},
        {"type": "drop_unowned", "id": uuid.uuid4().hex, "table": "products"},
        # A metadata push smuggled in as a command body: not a command, and not signed.
        {**evil_metadata, "version": 10**9 + 1},
    ]


def test_commands_injected_through_redis_are_refused_and_nothing_is_lost(cluster):
    token = cluster.api_token
    base = f"{cluster.client_urls[0]}/api/v1/tables/products/rows"
    status, before, _ = call("GET", f"{base}?keys=1,500,1000", token)
    assert status == 200 and len(before["rows"]) == 3, before
    redis_url = cluster.redis_url
    for node_id in ("tablet-1", "tablet-2"):
        for body in _wipe_commands(node_id):
            reply = _send_raw(redis_url, f"tablet.{node_id}", body)
            if body["type"] == "metadata":
                continue  # no reply expected: it is not a command
            assert reply is not None, f"{node_id} did not answer {body['type']}"
            assert reply["ok"] is False, reply
            assert reply["error"]["code"] == "link_unverified", reply
    time.sleep(1)  # give a wrongly applied push time to land before we look
    status, after, _ = call("GET", f"{base}?keys=1,500,1000", token)
    assert status == 200, after
    assert after["rows"] == before["rows"]
    for node_id in ("tablet-1", "tablet-2"):
        version = cluster.shell(
            node_id,
            "from tablet_app.services import metadata_version_current as v; print(v())",
        ).strip()
        assert int(version.splitlines()[-1]) < 10**9


def test_the_clusters_own_redis_refuses_clients_without_its_password(cluster):
    """``make run`` starts Redis itself when none answers; that one has a password,
    given to the cluster's processes in DISTDB_REDIS_URL (never on a command line)."""
    import redis

    anonymous = redis.Redis(host="127.0.0.1", port=cluster.redis_port, socket_timeout=3)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    assert redis.Redis.from_url(cluster.redis_url, socket_timeout=3).ping()
    for proc in cluster.processes.values():
        assert not any("pass" in arg for arg in proc.spec.argv), proc.spec.argv


def test_state_files_are_private_to_the_clusters_user(cluster):
    """Databases, keys, tokens, logs and every directory holding them: 0600/0700."""
    import os
    import stat

    loose = []
    for root, dirs, files in os.walk(cluster.data_dir):
        for name in [*dirs, *files]:
            path = os.path.join(root, name)
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            if mode & 0o077:
                loose.append(f"{oct(mode)} {os.path.relpath(path, cluster.data_dir)}")
    assert not loose, "\n".join(loose)
    assert stat.S_IMODE(os.stat(cluster.data_dir).st_mode) & 0o077 == 0
