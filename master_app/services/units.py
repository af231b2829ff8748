"""Numbers for people: durations and counts as the admin, the dashboard and
``cluster_status`` show them (one place, so every page says ``0.94 s`` the same way)."""

from __future__ import annotations

import math

__all__ = ["human_count", "human_duration"]


def human_duration(seconds: float | None) -> str:
    """``0.94 s``, ``12 ms``, ``3 min 5 s``, ``2 h 4 min``; an em dash for nothing."""
    if seconds is None or math.isnan(seconds):
        return "—"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 0.1:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def human_count(n: float) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f} M"
    if n >= 10_000:
        return f"{n / 1000:.1f} k"
    return f"{n:.0f}" if n == int(n) else f"{n:.1f}"
