"""A short seeded fault-harness run inside ``make test`` (``make chaos`` runs long ones).

Every nemesis, a fixed seed, about a minute of faults: the history must be linearizable
per key, every acknowledged insert present once, every range owned by exactly one server,
and the cluster serving again within the bound once the faults stop.
"""

from __future__ import annotations

import os

import pytest

from chaos.nemesis import NEMESES
from chaos.runner import ChaosConfig, chaos_run

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("DISTDB_CHAOS_SEED", "20261201"))
DURATION_S = float(os.environ.get("DISTDB_CHAOS_DURATION_S", "60"))


def test_a_short_seeded_run_with_every_nemesis_finds_no_anomaly(tmp_path):
    result = chaos_run(
        ChaosConfig(seed=SEED, duration_s=DURATION_S, out_dir=tmp_path / "chaos", kinds=NEMESES)
    )
    print(result.summary())
    assert result.faults > 0 and result.ops > 0
    assert result.linearizability["verdict"] == "ok", result.linearizability["anomalies"][:5]
    assert result.inserts["verdict"] == "ok", result.inserts
    assert result.ownership["ok"], result.ownership["problems"]
    assert result.recovery_s is not None, "the cluster did not serve again after the faults"
