"""A keyless add retried after a timeout makes one row when it carries an Idempotency-Key
(issue #9, defect 6), against real processes: the first attempt through one client
server, given up by the client before the answer; the retry through the other."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
import uuid

import pytest

from distdb.cluster import ClusterConfig, LocalCluster
from tests.integration.api import call

pytestmark = pytest.mark.integration


def test_a_keyless_add_retried_through_the_other_client_server_makes_one_row(cluster):
    token = cluster.api_token
    first, second = (f"{u}/api/v1/tables" for u in cluster.client_urls)
    status, body, _ = call("POST", f"{first}/", token, {"name": "idem", "key_type": "int"})
    assert status in (201, 409), body
    marker = uuid.uuid4().hex
    key = f"order-{marker}"
    rows = [{"cells": {"m": marker, "i": i}} for i in range(3)]

    request = urllib.request.Request(
        f"{first}/idem/rows",
        data=json.dumps(rows).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Idempotency-Key": key,
        },
    )
    # The client gives up at once: it cannot know whether the add was applied.
    with contextlib.suppress(TimeoutError, OSError):
        urllib.request.urlopen(request, timeout=0.005).read()

    retry = _post(f"{second}/idem/rows", token, rows, key)
    again = _post(f"{first}/idem/rows", token, rows, key)
    assert retry[0] == 201 and again[0] == 201, (retry, again)
    assert again[1] == retry[1]
    headers = {name.lower(): value for name, value in again[2].items()}  # any server's case
    assert headers.get("idempotent-replayed") == "true"
    status, page, _ = call("GET", f"{second}/idem/rows?limit=10000", token)
    assert status == 200
    mine = [r for r in page["rows"] if r["cells"].get("m") == marker]
    assert sorted(r["cells"]["i"] for r in mine) == [0, 1, 2]  # each row once


def test_expired_records_are_deleted_from_every_copy(tmp_path):
    """Nothing deleted the records: ``_idempotency`` grew by a row per keyed write for
    ever. The leader of each range deletes the expired ones through the write path, so
    its followers (rf=2) and the master's copy lose them too."""
    env = {"DISTDB_IDEMPOTENCY_TTL_S": "4", "DISTDB_IDEMPOTENCY_EXPIRE_INTERVAL_S": "1"}
    cfg = ClusterConfig.on_free_ports(tmp_path, tablets=2, clients=2, env=env, default_rf=2)
    with LocalCluster(cfg).up() as cluster:
        token = cluster.api_token
        tables = f"{cluster.client_urls[0]}/api/v1/tables"
        assert call("POST", f"{tables}/", token, {"name": "orders", "key_type": "str"})[0] == 201
        for i in range(5):
            status, body, _ = _post(f"{tables}/orders/rows", token, [{"cells": {"i": i}}], f"k{i}")
            assert status == 201, body

        def stored() -> dict[str, int]:
            code = (
                "from tablet_app.models import Row; "
                "print(Row.objects.filter(table='_idempotency').count())"
            )
            return {n: int(cluster.shell(n, code)) for n in ("tablet-1", "tablet-2")}

        assert sum(stored().values()) >= 5  # written (on the leader and its follower)
        deadline = time.monotonic() + 60
        while any(stored().values()):
            assert time.monotonic() < deadline, f"records still stored: {stored()}"
            time.sleep(1)
        code = (
            "from master_app.models import ConsolidatedRow; "
            "from master_app.services.collect import changes_collect_all; "
            "changes_collect_all(); "
            "print(ConsolidatedRow.objects.filter(table__name='_idempotency').count())"
        )
        assert cluster.shell("master", code) == "0"


def _post(url: str, token: str, body, key: str):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Idempotency-Key": key,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)
