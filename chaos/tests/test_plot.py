"""The latency plot names every nemesis in its legend, in a colour of its own."""

from __future__ import annotations

from chaos.nemesis import NEMESES
from chaos.plot import COLOURS, latency_plot


def test_every_nemesis_has_a_colour_of_its_own():
    assert set(COLOURS) == set(NEMESES)
    assert len(set(COLOURS.values())) == len(COLOURS)


def test_a_plot_is_written(tmp_path):
    faults = [
        {"kind": kind, "target": "tablet-1", "start": i, "end": i + 0.5}
        for i, kind in enumerate(NEMESES)
    ]
    latency_plot(
        [(0.1, 0.01, "read", True), (0.2, 3.0, "write", False)], faults, tmp_path / "p.png"
    )
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
