"""Line plots as inline SVG, drawn on the server: no JavaScript, no chart library, no CDN.

One marker per release (class ``pt``, with ``data-version`` and ``data-value``; a hollow
``rejected`` marker for a model that was rejected, a cross at the bottom where nothing was
measured), a line through the measured values, and the gate's threshold as a dashed line
(class ``threshold``). Colours and fonts come from the dashboard's stylesheet.
"""
from __future__ import annotations

import math
from html import escape

from markupsafe import Markup

W, H = 560, 190
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 26, 34


def _nice_range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if math.isclose(lo, hi):
        pad = abs(lo) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.08
    return lo - pad, hi + pad


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def line_plot(points: list[dict], key: str, *, title: str, unit: str = "", digits: int = 3,
              threshold_key: str | None = None, threshold_label: str = "gate",
              scale: float = 1.0, plot_id: str = "") -> Markup:
    """`points`: oldest first, each {version, state, <key>, [<threshold_key>]}."""
    values = [p[key] / scale for p in points if isinstance(p.get(key), (int, float))]
    limits = [p[threshold_key] / scale for p in points
              if threshold_key and isinstance(p.get(threshold_key), (int, float))]
    out = [f'<svg class="plot" id="{escape(plot_id)}" viewBox="0 0 {W} {H}" role="img" '
           f'aria-label="{escape(title)}" data-points="{len(points)}" '
           f'xmlns="http://www.w3.org/2000/svg">',
           f'<text class="title" x="{LEFT}" y="16">{escape(title)}'
           f'{" (" + escape(unit) + ")" if unit else ""}</text>']
    if not points:
        out.append(f'<text class="empty" x="{W / 2}" y="{H / 2}" text-anchor="middle">'
                   'no releases</text></svg>')
        return Markup("".join(out))
    lo, hi = _nice_range(values + limits) if values or limits else (0.0, 1.0)
    x0, x1, y0, y1 = LEFT, W - RIGHT, H - BOTTOM, TOP
    n = len(points)

    def x_of(i: int) -> float:
        return (x0 + x1) / 2 if n == 1 else x0 + (x1 - x0) * i / (n - 1)

    def y_of(v: float) -> float:
        return y0 - (y0 - y1) * (v - lo) / (hi - lo)

    out.append(f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}"/>')
    out.append(f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}"/>')
    for frac in (0.0, 0.5, 1.0):
        v = lo + (hi - lo) * frac
        y = y_of(v)
        out.append(f'<line class="grid" x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{_fmt(v, digits)}</text>')
    for i in sorted({0, n - 1}):
        label = str(points[i].get("version") or "")[:20]
        out.append(f'<text class="tick" x="{x_of(i):.1f}" y="{H - 16}" '
                   f'text-anchor="{"start" if i == 0 and n > 1 else "end" if i else "middle"}">'
                   f'{escape(label)}</text>')
    if threshold_key:
        segs = [(x_of(i), y_of(p[threshold_key] / scale)) for i, p in enumerate(points)
                if isinstance(p.get(threshold_key), (int, float))]
        if len(segs) == 1:
            segs = [(x0, segs[0][1]), (x1, segs[0][1])]
        if segs:
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in segs)
            out.append(f'<polyline class="threshold" points="{pts}"/>')
            out.append(f'<text class="threshold-label" x="{x1}" y="{segs[-1][1] - 4:.1f}" '
                       f'text-anchor="end">{escape(threshold_label)}</text>')
    line = [(x_of(i), y_of(p[key] / scale)) for i, p in enumerate(points)
            if isinstance(p.get(key), (int, float))]
    if len(line) > 1:
        out.append('<polyline class="series" points="'
                   + " ".join(f"{x:.1f},{y:.1f}" for x, y in line) + '"/>')
    r = 4 if n <= 60 else 2.5 if n <= 200 else 1.6
    for i, p in enumerate(points):
        version = escape(str(p.get("version") or ""))
        state = "rejected" if p.get("state") == "rejected" else "published"
        value = p.get(key)
        if isinstance(value, (int, float)):
            text = _fmt(value / scale, digits)
            out.append(f'<circle class="pt {state}" cx="{x_of(i):.1f}" cy="{y_of(value / scale):.1f}" '
                       f'r="{r}" data-version="{version}" data-value="{text}">'
                       f'<title>{version}: {text}{" " + escape(unit) if unit else ""} '
                       f'({state})</title></circle>')
        else:
            out.append(f'<circle class="pt missing" cx="{x_of(i):.1f}" cy="{y0:.1f}" r="{r}" '
                       f'data-version="{version}" data-value=""><title>{version}: not measured '
                       f'({state})</title></circle>')
    out.append("</svg>")
    return Markup("".join(out))


def bar_rows(counts: dict[str, int], width: int = 160) -> list[dict]:
    """Op histogram rows with a bar length in px (for an SVG bar per row)."""
    top = max(counts.values(), default=0) or 1
    return [{"name": k, "count": v, "px": max(1, round(width * v / top))}
            for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
