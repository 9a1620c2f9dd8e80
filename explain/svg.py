"""Small inline SVG charts for the HTML report: lines, quartile bands, bars, reference lines, shaded spans.

Written directly (no plotting library): a report is drawn in milliseconds, so the callback can write one at
the end of every ``fit`` without adding to the run's time, and the page needs no script or external file.

>>> s = chart("t", "epoch", "y", series=[{"x": [0, 1, 2], "y": [0.1, float("nan"), 0.3], "label": "a"}])
>>> s.startswith("<svg") and s.count("<polyline") == 2  # a NaN breaks the line
True
"""
from __future__ import annotations

import html
import math
import re
from typing import Optional, Sequence

__all__ = ["chart", "COLORS", "nice_ticks", "shorten"]

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
_FONT = 'font-family="system-ui,sans-serif"'


def nice_ticks(lo: float, hi: float, n: int = 6, integer: bool = False) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]``.

    >>> nice_ticks(0, 1)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    >>> nice_ticks(-1, 39, integer=True)[:3]
    [0.0, 10.0, 20.0]
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if integer:
        step = float(max(1, round(step)))
    first = math.ceil(lo / step - 1e-9) * step
    out, v = [], first
    while v <= hi + 1e-9 * step:
        out.append(round(v, 10))
        v += step
    return out


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 and abs(v) < 1e6 else f"{v:.3g}"


def _tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels of an axis's ticks, with as many decimals as it takes to tell them apart (a narrow range of
    0.3095 .. 0.3105 is not labelled 0.31, 0.31, 0.311).

    >>> _tick_labels([0.3095, 0.31, 0.3105]), _tick_labels([0.0, 10.0, 20.0]), _tick_labels([0.2, 0.4])
    (['0.3095', '0.3100', '0.3105'], ['0', '10', '20'], ['0.2', '0.4'])
    """
    if len(ticks) < 2 or max(abs(t) for t in ticks) >= 1e6:
        return [_fmt(t) for t in ticks]
    for d in range(0, 9):
        labels = [f"{t:.{d}f}" for t in ticks]
        if len(set(labels)) == len(labels) and all(abs(float(x) - t) < 1e-9 + 1e-6 * abs(t) for x, t in zip(labels, ticks)):
            return labels
    return [_fmt(t) for t in ticks]


def _e(s) -> str:
    return html.escape(str(s))


def chart(title: str, xlabel: str, ylabel: str, series: Sequence[dict] = (), bands: Sequence[dict] = (),
          bars: Sequence[dict] = (), vlines: Sequence[dict] = (), hlines: Sequence[dict] = (),
          shades: Sequence[dict] = (), ylim: Optional[tuple[float, float]] = None, right: Optional[dict] = None,
          width: int = 900, height: int = 300, integer_x: bool = True, integer_y: bool = False) -> str:
    """One chart as an ``<svg>`` string.

    ``series``: ``{"x", "y", "label", "color", "dash", "axis": "left"|"right", "width", "markers"}`` (``markers``:
    a dot at each point, for values measured at some epochs only); ``bands``: ``{"x", "lo",
    "hi", "color"}`` (filled between); ``bars``: ``{"x", "y", "width" (data units), "color", "label"}``;
    ``vlines`` / ``hlines``: ``{"x"|"y", "color", "dash", "label"}``; ``shades``: ``{"x0", "x1", "color",
    "label"}`` (a labelled span, e.g. a pipeline stage); ``right``: ``{"label", "ylim"}`` for series on the right
    axis. NaN values are gaps.
    """
    xs = [float(v) for s in (*series, *bands, *bars) for v in s["x"] if _finite(v)]
    xs += [float(v["x"]) for v in vlines if _finite(v["x"])] + [float(v) for s in shades for v in (s["x0"], s["x1"])]
    if not xs:
        xs = [0.0, 1.0]
    x0, x1 = min(xs), max(xs)
    pad = 0.5 if integer_x else 0.02 * (x1 - x0 or 1)
    x0, x1 = x0 - pad, x1 + pad

    def yrange(axis: str, given) -> tuple[float, float]:
        if given:
            return float(given[0]), float(given[1])
        ys = [float(v) for s in series if s.get("axis", "left") == axis for v in s["y"] if _finite(v)]
        if axis == "left":
            ys += [float(v) for b in bands for k in ("lo", "hi") for v in b[k] if _finite(v)]
            ys += [float(v) for b in bars for v in b["y"] if _finite(v)] + [0.0] * bool(bars)
            ys += [float(h["y"]) for h in hlines if _finite(h["y"])]
        if not ys:
            return 0.0, 1.0
        lo, hi = min(ys), max(ys)
        span = hi - lo or abs(hi) or 1.0
        return lo - 0.05 * span, hi + 0.05 * span

    yl0, yl1 = yrange("left", ylim)
    yr0, yr1 = yrange("right", right.get("ylim") if right else None)
    legend = [(s.get("label"), s.get("color", COLORS[k % len(COLORS)]), s.get("dash"), "line")
              for k, s in enumerate(series) if s.get("label")]
    legend += [(b.get("label"), b.get("color", COLORS[k % len(COLORS)]), None, "box") for k, b in enumerate(bars)
               if b.get("label")]
    legend += [(v.get("label"), v.get("color", "#555"), v.get("dash", True), "line") for v in vlines if v.get("label")]
    legend += [(b["label"], b.get("color", "#999"), None, "band") for b in bands if b.get("label")]
    y_ticks = [t for t in nice_ticks(yl0, yl1, integer=integer_y) if yl0 <= t <= yl1]
    y_labels = _tick_labels(y_ticks)
    # room for the longest tick label beside the rotated axis label (11 px type: about 6.2 px a character)
    left = max(62, int(30 + 6.2 * max((len(t) for t in y_labels), default=0)))
    rgt, top = (62 if right else 18), (44 if any(sh.get("label") for sh in shades) else 28)
    plot_w = width - left - rgt
    rows, cur = 0, 0.0  # legend flows in rows under the axis label
    for label, *_ in legend:
        w = 30 + 6.2 * len(str(label))
        if cur + w > plot_w and cur > 0:
            rows, cur = rows + 1, 0.0
        cur += w
    legend_h = (rows + 1) * 16 + 6 if legend else 0
    total_h = height + legend_h
    bottom = 42
    plot_h = height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float, axis: str = "left") -> float:
        a, b = (yl0, yl1) if axis == "left" else (yr0, yr1)
        y = min(max(y, a - 0.02 * (b - a)), b + 0.02 * (b - a))  # clip to the frame
        return top + (1 - (y - a) / ((b - a) or 1)) * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total_h}" viewBox="0 0 {width} {total_h}" '
           f'role="img" {_FONT} font-size="11"><title>{_e(title)}</title>',
           f'<rect x="0" y="0" width="{width}" height="{total_h}" fill="white"/>',
           f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" font-size="12.5" font-weight="600">{_e(title)}</text>']
    for s in shades:
        color = s.get("color", "#999")
        out.append(f'<rect x="{px(s["x0"]):.1f}" y="{top}" width="{max(px(s["x1"]) - px(s["x0"]), 0):.1f}" '
                   f'height="{plot_h}" fill="{color}" fill-opacity="0.08"/>')
        if s.get("label"):
            out.append(f'<text x="{(px(s["x0"]) + px(s["x1"])) / 2:.1f}" y="{top - 4}" text-anchor="middle" '
                       f'fill="{color}" font-weight="600">{_e(s["label"])}</text>')
    # grid and axes
    for t, label in zip(y_ticks, y_labels):
        y = py(t)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    ticks = nice_ticks(x0 + pad, x1 - pad, 10, integer_x)
    for t, label in zip(ticks, _tick_labels(ticks)):
        x = px(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" stroke="#f0f0f0"/>'
                   f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{label}</text>')
    if right:
        ticks = nice_ticks(yr0, yr1)
        for t, label in zip(ticks, _tick_labels(ticks)):
            out.append(f'<text x="{left + plot_w + 5}" y="{py(t, "right") + 4:.1f}">{label}</text>')
        out.append(f'<text transform="translate({width - 12},{top + plot_h / 2:.0f}) rotate(90)" '
                   f'text-anchor="middle">{_e(right.get("label", ""))}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>')
    out.append(f'<text x="{left + plot_w / 2:.0f}" y="{top + plot_h + 32}" text-anchor="middle">{_e(xlabel)}</text>')
    out.append(f'<text transform="translate(14,{top + plot_h / 2:.0f}) rotate(-90)" text-anchor="middle">'
               f'{_e(ylabel)}</text>')
    for k, b in enumerate(bands):
        color = b.get("color", COLORS[k % len(COLORS)])
        for seg in _segments(b["x"], b["lo"], b["hi"]):
            pts = [f"{px(x):.1f},{py(lo):.1f}" for x, lo, _ in seg] + \
                  [f"{px(x):.1f},{py(hi):.1f}" for x, _, hi in reversed(seg)]
            out.append(f'<polygon points="{" ".join(pts)}" fill="{color}" fill-opacity="0.18" stroke="none"/>')
    for k, b in enumerate(bars):
        color = b.get("color", COLORS[k % len(COLORS)])
        w = float(b.get("width", 0.8))
        for x, y in zip(b["x"], b["y"]):
            if _finite(x) and _finite(y):
                ytop, ybase = py(max(float(y), 0.0)), py(min(float(y), 0.0))
                out.append(f'<rect x="{px(float(x) - w / 2):.1f}" y="{ytop:.1f}" width="{px(float(x) + w / 2) - px(float(x) - w / 2):.1f}" '
                           f'height="{max(ybase - ytop, 0.5):.1f}" fill="{color}" fill-opacity="0.85"/>')
    for h in hlines:
        if _finite(h["y"]):
            out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(h["y"]):.1f}" y2="{py(h["y"]):.1f}" '
                       f'stroke="{h.get("color", "#999")}" stroke-dasharray="5,4"/>')
    for v in vlines:
        if _finite(v["x"]):
            dash = ' stroke-dasharray="3,3"' if v.get("dash", True) else ""
            out.append(f'<line x1="{px(v["x"]):.1f}" x2="{px(v["x"]):.1f}" y1="{top}" y2="{top + plot_h}" '
                       f'stroke="{v.get("color", "#555")}" stroke-width="1.5"{dash}/>')
    for k, s in enumerate(series):
        color = s.get("color", COLORS[k % len(COLORS)])
        axis = s.get("axis", "left")
        dash = ' stroke-dasharray="6,4"' if s.get("dash") else ""
        for seg in _segments(s["x"], s["y"]):
            pts = " ".join(f"{px(x):.1f},{py(y, axis):.1f}" for x, y in seg)
            out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="{s.get("width", 1.8)}"{dash}/>')
            for x, y in (seg if s.get("markers") else seg[:1] if len(seg) == 1 else []):
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(y, axis):.1f}" r="2.5" fill="{color}"/>')
    # legend
    lx, ly = float(left), height + 4.0
    for label, color, dash, kind in legend:
        w = 30 + 6.2 * len(str(label))
        if lx + w > left + plot_w and lx > left:
            lx, ly = float(left), ly + 16
        if kind == "line":
            d = ' stroke-dasharray="5,3"' if dash else ""
            out.append(f'<line x1="{lx:.1f}" x2="{lx + 22:.1f}" y1="{ly + 6:.1f}" y2="{ly + 6:.1f}" stroke="{color}" '
                       f'stroke-width="2"{d}/>')
        else:
            op = "0.85" if kind == "box" else "0.25"
            out.append(f'<rect x="{lx:.1f}" y="{ly:.1f}" width="22" height="11" fill="{color}" fill-opacity="{op}"/>')
        out.append(f'<text x="{lx + 26:.1f}" y="{ly + 10:.1f}">{_e(label)}</text>')
        lx += w
    out.append("</svg>")
    return "".join(out)


def _segments(x, *ys) -> list[list[tuple]]:
    """Runs of points where every value is finite (NaN values break a line or a band)."""
    segs, cur = [], []
    for pt in zip(x, *ys):
        if all(_finite(v) for v in pt):
            cur.append(tuple(float(v) for v in pt))
        elif cur:
            segs.append(cur)
            cur = []
    if cur:
        segs.append(cur)
    return segs


_YEAR = re.compile(r"\s*\(\d{4}\)$")


def shorten(text: str, width: int = 48) -> str:
    """``text`` if it fits in ``width`` characters, else cut at a word boundary with an ellipsis, keeping a
    trailing year: ``"Shanghai Triad (Yao a yao yao dao…) (1995)"``. A single word longer than the room is
    the only thing cut inside a word."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    year = _YEAR.search(text)
    tail = year.group(0) if year and len(year.group(0)) < width // 2 else ""
    head = text[: len(text) - len(tail)] if tail else text
    room = width - len(tail) - 1  # one character for the ellipsis
    cut = head[: room + 1]
    cut = cut[: cut.rfind(" ")] if " " in cut.strip() else head[:room]
    return cut.rstrip(" ,;:-") + "…" + tail
