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


# --- server tokens: revoked everywhere, rotated without a restart -------------------------------


def _jti(token: str) -> str:
    import jwt

    return jwt.decode(token, options={"verify_signature": False})["jti"]


def _wait_for(what: str, check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.25)


def _tablet_answer(cluster, tablet: str, token: str) -> tuple[int, str | None]:
    """A tablet server's answer to a read sent with ``token`` (status, error code)."""
    body = {"type": "read", "table": "products", "meta_version": 0, "keys": []}
    status, payload, _ = call("POST", f"{cluster.node_url(tablet)}/internal/v1/read", token, body)
    return status, payload["error"]["code"] if status != 200 else None


def _reads_ok(client_url: str, token: str) -> bool:
    status, payload, _ = call("GET", f"{client_url}/api/v1/tables/products/rows?keys=1,1000", token)
    return status == 200 and len(payload["rows"]) == 2


def _token_file(cluster, node_id: str):
    return cluster.data_dir / "tokens" / f"{node_id}.jwt"


def test_a_revoked_client_token_is_refused_by_the_tablets_and_a_new_one_is_picked_up(cluster):
    api = cluster.api_token
    client_1, client_2 = cluster.client_urls
    old = cluster.server_token("client-2")
    assert _reads_ok(client_2, api)
    assert _tablet_answer(cluster, "tablet-1", old) == (200, None)

    cluster.manage("revoke_server_token", "--jti", _jti(old))
    for tablet in ("tablet-1", "tablet-2"):  # told over the link, kept in their databases
        _wait_for(
            f"{tablet} refuses the revoked token",
            lambda t=tablet: _tablet_answer(cluster, t, old) == (401, "token_revoked"),
        )
    assert not _reads_ok(client_2, api)
    assert _reads_ok(client_1, api)  # the other client server's token still passes

    # Rotation: a new token written to client-2's token file, no restart.
    pid = cluster.process("client-2").pid
    cluster.manage("sign_jwt", "client-2", "client", "--out", str(_token_file(cluster, "client-2")))
    _wait_for("client-2 reads again with its new token", lambda: _reads_ok(client_2, api))
    assert cluster.process("client-2").pid == pid


def test_a_tablet_rotates_its_token_without_a_restart_and_a_revoked_one_loses_its_link(cluster):
    api = cluster.api_token
    client_1 = cluster.client_urls[0]
    link = cluster.process("tablet-2-link")
    pid, old = link.pid, cluster.server_token("tablet-2")
    url = cluster.node_url("tablet-2")
    state = "from master_app.models import TabletServer as T; "
    state += "print(T.objects.get(node_id='tablet-2').state)"

    # Rotation: write the new token, then revoke the old one; the master drops the link
    # (4401 token_revoked) and the agent dials again with the new token.
    path = str(_token_file(cluster, "tablet-2"))
    cluster.manage("sign_jwt", "tablet-2", "tablet", "--url", url, "--out", path)
    new = cluster.server_token("tablet-2")
    cluster.manage("revoke_server_token", "--node", "tablet-2", "--except", _jti(new))
    _wait_for(
        "the master unlinks the old token",
        lambda: "tablet server tablet-2 unlinked (code 4401)" in cluster.log("master", 400),
    )
    _wait_for("tablet-2 links again", lambda: cluster.shell("master", state) == "up")
    assert link.running and link.pid == pid  # the same process, with its new token
    assert _tablet_answer(cluster, "tablet-1", old) == (401, "token_revoked")  # a peer refuses
    assert _tablet_answer(cluster, "tablet-1", new) == (200, None)
    _wait_for("reads through tablet-2", lambda: _reads_ok(client_1, api))

    # Revoked without a replacement: the link is dropped and the agent stops, refused.
    cluster.manage("revoke_server_token", "--jti", _jti(new))
    _wait_for("the link agent stops", lambda: not link.running)
    assert "token_revoked" in cluster.log("tablet-2-link", 100)
    assert cluster.shell("master", state) == "down"

    # Put it back for the other tests: a new token, the agent started again.
    cluster.manage("sign_jwt", "tablet-2", "tablet", "--url", url, "--out", path)
    cluster.restart("tablet-2-link")
    _wait_for("tablet-2 links again", lambda: cluster.shell("master", state) == "up")
    _wait_for("reads through tablet-2", lambda: _reads_ok(client_1, api))


def test_a_tablet_welcomed_while_the_masters_clock_was_ahead_follows_it_back(tmp_path):
    """The master's wall clock is stepped forward, a tablet's link (re)connects, and the
    clock is stepped back: the link judged every later master message by the clock the
    welcome taught it, found each expired, and refused metadata and leases until the
    connection happened to drop (a minute in chaos seed 20261204). It dials again now."""
    from chaos.clockshift import build_clockshift, clockshift_unavailable
    from distdb.cluster import ClusterConfig, LocalCluster

    if (why := clockshift_unavailable()) is not None:
        pytest.skip(why)
    lib = build_clockshift(tmp_path / "lib")
    cfg = ClusterConfig.on_free_ports(tmp_path / "c", tablets=2, clients=1, clock_shift_lib=lib)
    with LocalCluster(cfg).up() as cluster:
        cluster.clock_step("master", 260.0)
        time.sleep(1.5)  # the shifter re-reads its file once a second
        cluster.restart("tablet-1-link")  # welcomed by the master 260 s ahead
        cluster.clock_step("master", 0.0)
        time.sleep(1.5)
        tables = f"{cluster.client_urls[0]}/api/v1/tables/"
        status, body, _ = call("POST", tables, cluster.api_token, {"name": "t", "key_type": "str"})
        assert status == 201, body
        wanted = int(cluster.shell("master", _VERSION_MASTER))
        deadline = time.monotonic() + 15
        while (have := int(cluster.shell("tablet-1", _VERSION_TABLET))) < wanted:
            assert time.monotonic() < deadline, f"tablet-1 is at v{have}, the master at v{wanted}"
            time.sleep(0.5)


_VERSION_MASTER = (
    "from master_app.services.metadata import metadata_current; print(metadata_current().version)"
)
_VERSION_TABLET = (
    "from tablet_app.services import metadata_version_current; print(metadata_version_current())"
)
