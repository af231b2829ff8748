"""Server-rendered SVG charts of the master's dashboard (no JavaScript, no CDN).

Loaded by the master role. Each function returns markup built with ``format_html`` (every
label escaped) for the dashboard template: the key distribution of a table (its ranges
along the key space, widths proportional to rows, coloured by server) and its
key-access heatmap (ranges down, minutes across, colour = reads + writes per minute),
after Cloud Bigtable's Key Visualizer. Hovering a shape shows its figures (``<title>``).
"""

from __future__ import annotations

import datetime

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from master_app.services.dashboard import Heatmap, RangeBar

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
WIDTH = 900


def _n(x: float) -> str:
    """A coordinate (format_html escapes its arguments to text, so numbers go in formatted)."""
    return f"{x:.1f}"


def server_colours(servers: list[str]) -> dict[str, str]:
    return {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(sorted(set(servers)))}


def key_distribution_svg(table: str, bars: list[RangeBar], colours: dict[str, str]) -> SafeString:
    """One bar across the key space: a segment per range, as wide as its share of rows."""
    height, top = 64, 8
    total = sum(b.rows for b in bars)
    # A range without rows still gets a sliver, so that every range can be seen.
    weights = [max(b.rows, total * 0.01, 1) for b in bars]
    scale = WIDTH / sum(weights)
    x = 0.0
    parts = []
    for bar, weight in zip(bars, weights, strict=True):
        w = weight * scale
        parts.append(
            format_html(
                "<g><title>{} [{}, {}) on {}: {} rows</title>"
                '<rect x="{}" y="{}" width="{}" height="{}" fill="{}" stroke="#fff"/>'
                '<text x="{}" y="{}" font-size="11" fill="#fff">{}</text></g>',
                table,
                bar.start,
                bar.end,
                bar.server,
                bar.rows,
                _n(x),
                top,
                _n(w),
                height - 2 * top - 14,
                colours.get(bar.server, "#999"),
                _n(x + 4),
                top + 18,
                bar.rows if w > 40 else "",
            )  # fmt: skip
        )
        parts.append(
            format_html(
                '<text x="{}" y="{}" font-size="10" fill="#555">{}</text>',
                _n(x + 2),
                height - 4,
                bar.start if w > 30 else "",
            )  # fmt: skip
        )
        x += w
    legend = format_html_join(
        "",
        '<span style="display:inline-block;margin-right:12px">'
        '<span style="display:inline-block;width:10px;height:10px;background:{}"></span> {}</span>',
        ((c, s) for s, c in sorted(colours.items())),
    )
    return format_html(
        '<svg id="key-distribution-{}" class="distdb-chart" role="img" viewBox="0 0 {} {}" '
        'width="{}" height="{}" xmlns="http://www.w3.org/2000/svg">'
        "<desc>Key distribution of {}: {} ranges, {} rows</desc>{}</svg><div>{}</div>",
        table, WIDTH, height, WIDTH, height, table, len(bars), total,
        mark_safe("".join(parts)), legend,
    )  # fmt: skip


def _heat(value: int, peak: int) -> str:
    """White (nothing) through yellow to dark red (the busiest cell of the map)."""
    if value <= 0 or peak <= 0:
        return "#f4f4f4"
    t = (value / peak) ** 0.5  # square root: a hot spot stands out, the rest stays visible
    r = 255 if t < 0.5 else int(255 - (t - 0.5) * 2 * 120)
    g = int(230 - t * 230)
    b = int(80 - t * 80)
    return f"#{r:02x}{g:02x}{b:02x}"


def key_access_svg(table: str, heat: Heatmap) -> SafeString:
    """Ranges down (in key order), the last hour across, colour = reads + writes per minute."""
    label_w, cell_h = 150, 22
    cols = len(heat.minutes)
    cell_w = (WIDTH - label_w) / max(cols, 1)
    height = cell_h * max(len(heat.ranges), 1) + 24
    parts = []
    for row, bar in enumerate(heat.ranges):
        y = row * cell_h
        parts.append(
            format_html(
                '<text x="0" y="{}" font-size="11" fill="#333">[{}, {}) {}</text>',
                y + 15,
                bar.start,
                bar.end,
                bar.server,
            )  # fmt: skip
        )
        for col, minute in enumerate(heat.minutes):
            value = heat.cells[row][col]
            when = datetime.datetime.fromtimestamp(minute * 60, datetime.UTC).strftime("%H:%M")
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                    "<title>[{}, {}) at {} UTC: {} reads + writes</title></rect>",
                    _n(label_w + col * cell_w),
                    y,
                    _n(cell_w + 0.3),
                    cell_h - 2,
                    _heat(value, heat.peak),
                    bar.start,
                    bar.end,
                    when,
                    value,
                )  # fmt: skip
            )
    for col in range(0, cols, 10):
        tick = datetime.datetime.fromtimestamp(heat.minutes[col] * 60, datetime.UTC)
        parts.append(
            format_html(
                '<text x="{}" y="{}" font-size="10" fill="#555">{}</text>',
                _n(label_w + col * cell_w),
                height - 6,
                tick.strftime("%H:%M"),
            )  # fmt: skip
        )
    return format_html(
        '<svg id="key-access-{}" class="distdb-chart" role="img" viewBox="0 0 {} {}" '
        'width="{}" height="{}" xmlns="http://www.w3.org/2000/svg">'
        "<desc>Key access of {} per range and minute, last hour (busiest cell: {})</desc>"
        "{}</svg>",
        table, WIDTH, height, WIDTH, height, table, heat.peak, mark_safe("".join(parts)),
    )  # fmt: skip
