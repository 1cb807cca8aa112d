"""Small, dependency-free SVG charts for the HTML reports (line charts with min–max bands, grouped bars).

Written by hand instead of adding matplotlib: the reports need a handful of plot types, and inline
SVG keeps them self-contained, crisp at any zoom and inspectable in the DOM."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_W, _H = 640, 360
_M = {"left": 70, "right": 20, "top": 40, "bottom": 80}


@dataclass(frozen=True)
class Series:
    name: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    lo: Sequence[float | None] | None = None  # spread (e.g. min over repeats)
    hi: Sequence[float | None] | None = None
    color: str | None = None
    dashed: bool = False


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 10000:
        return f"{v / 1000:.0f}k"
    if a >= 1000:
        return f"{v / 1000:.1f}k".replace(".0k", "k")
    if a >= 10:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.2g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 × 10^k steps) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = [round(start, 12)]
    while ticks[-1] < hi - step * 1e-9:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    lo, hi = max(lo, 1e-12), max(hi, lo * 10)
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0**e
            if lo / 1.0001 <= v <= hi * 1.0001:
                ticks.append(v)
    return ticks or [lo, hi]


class _Axis:
    def __init__(self, lo: float, hi: float, log: bool, px0: float, px1: float) -> None:
        self.log = log
        if log:
            lo, hi = max(lo, 1e-12), max(hi, lo * 1.01)
            self.ticks = log_ticks(lo, hi)
            lo, hi = min(lo, self.ticks[0]), max(hi, self.ticks[-1])
            self.lo, self.hi = math.log10(lo), math.log10(hi)
        else:
            self.ticks = nice_ticks(lo, hi)
            self.lo, self.hi = min(lo, self.ticks[0]), max(hi, self.ticks[-1])
        if self.hi <= self.lo:
            self.hi = self.lo + 1
        self.px0, self.px1 = px0, px1

    def __call__(self, v: float) -> float:
        x = math.log10(max(v, 1e-12)) if self.log else v
        return self.px0 + (x - self.lo) / (self.hi - self.lo) * (self.px1 - self.px0)


def _frame(title: str, x_label: str, y_label: str, body: list[str], legend: list[tuple[str, str, bool]],
           width: int, height: int) -> str:
    parts = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{escape(title)}</text>',
        f'<text x="{(_M["left"] + width - _M["right"]) / 2}" y="{height - 42}" text-anchor="middle" '
        f'font-size="12">{escape(x_label)}</text>',
        f'<text transform="translate(16,{(_M["top"] + height - _M["bottom"]) / 2}) rotate(-90)" '
        f'text-anchor="middle" font-size="12">{escape(y_label)}</text>',
        *body,
    ]
    x = _M["left"]
    for name, color, dashed in legend:
        dash = ' stroke-dasharray="5,3"' if dashed else ""
        parts.append(f'<line class="legend" x1="{x}" y1="{height - 16}" x2="{x + 22}" y2="{height - 16}" '
                     f'stroke="{color}" stroke-width="3"{dash}/>')
        parts.append(f'<text x="{x + 27}" y="{height - 12}" font-size="12">{escape(name)}</text>')
        x += 40 + 7 * len(name)
    parts.append("</svg>")
    return "\n".join(parts)


def _axes(xa: _Axis, ya: _Axis, x_ticks: Sequence[float], height: int, width: int) -> list[str]:
    y0, x1 = height - _M["bottom"], width - _M["right"]
    out = [f'<line x1="{_M["left"]}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/>',
           f'<line x1="{_M["left"]}" y1="{_M["top"]}" x2="{_M["left"]}" y2="{y0}" stroke="#333"/>']
    for t in ya.ticks:
        y = ya(t)
        out.append(f'<line x1="{_M["left"]}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{_M["left"] - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_fmt(t)}</text>')
    for t in x_ticks:
        x = xa(t)
        out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + 5}" stroke="#333"/>')
        out.append(f'<text x="{x:.1f}" y="{y0 + 18}" text-anchor="middle" font-size="11">{_fmt(t)}</text>')
    return out


def line_chart(title: str, x_label: str, y_label: str, series: Sequence[Series], *, log_x: bool = False,
               log_y: bool = False, diagonal: bool = False, y_from_zero: bool = True,
               width: int = _W, height: int = _H) -> str:
    """Lines with markers; ``lo``/``hi`` draw a shaded spread band; ``diagonal`` draws y = x."""
    pts = [(x, y) for s in series for x, y in zip(s.xs, s.ys, strict=True) if y is not None]
    spread = [v for s in series for band in (s.lo, s.hi) if band for v in band if v is not None]
    xs = [p[0] for p in pts] or [0.0, 1.0]
    ys = [p[1] for p in pts] + spread or [0.0, 1.0]
    y_lo = min(ys)
    if not log_y and y_from_zero:
        y_lo = min(0.0, y_lo)
    y_hi = max(ys) * (1.0 if log_y else 1.05)
    if diagonal:
        y_hi = max(y_hi, *xs)
    xa = _Axis(min(xs), max(xs), log_x, _M["left"], width - _M["right"])
    ya = _Axis(y_lo, y_hi, log_y, height - _M["bottom"], _M["top"])
    x_ticks = sorted(set(xs)) if len(set(xs)) <= 8 else xa.ticks
    body = _axes(xa, ya, x_ticks, height, width)
    if diagonal:
        a, b = min(xs), max(xs)
        body.append(f'<line class="reference" x1="{xa(a):.1f}" y1="{ya(a):.1f}" x2="{xa(b):.1f}" y2="{ya(b):.1f}" '
                    'stroke="#999" stroke-dasharray="4,4"/>')
    legend = []
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        legend.append((s.name, color, s.dashed))
        if s.lo is not None and s.hi is not None:
            band = [(x, lo, hi) for x, lo, hi in zip(s.xs, s.lo, s.hi, strict=True)
                    if lo is not None and hi is not None]
            if len(band) >= 2:
                upper = " ".join(f"{xa(x):.1f},{ya(hi):.1f}" for x, _, hi in band)
                lower = " ".join(f"{xa(x):.1f},{ya(lo):.1f}" for x, lo, _ in reversed(band))
                body.append(f'<polygon class="spread" points="{upper} {lower}" fill="{color}" fill-opacity="0.15"/>')
            for x, lo, hi in band:
                body.append(f'<line class="errorbar" x1="{xa(x):.1f}" y1="{ya(lo):.1f}" x2="{xa(x):.1f}" '
                            f'y2="{ya(hi):.1f}" stroke="{color}" stroke-width="1.5"/>')
        line = [(x, y) for x, y in zip(s.xs, s.ys, strict=True) if y is not None]
        if line:
            d = "M " + " L ".join(f"{xa(x):.1f},{ya(y):.1f}" for x, y in line)
            dash = ' stroke-dasharray="6,4"' if s.dashed else ""
            body.append(f'<path class="series" d="{d}" fill="none" stroke="{color}" stroke-width="2"{dash}>'
                        f'<title>{escape(s.name)}</title></path>')
            for x, y in line:
                body.append(f'<circle class="point" cx="{xa(x):.1f}" cy="{ya(y):.1f}" r="3.5" fill="{color}">'
                            f'<title>{escape(s.name)}: {_fmt(x)} → {_fmt(y)}</title></circle>')
    return _frame(title, x_label, y_label, body, legend, width, height)


def bar_chart(title: str, y_label: str, categories: Sequence[str], series: Sequence[tuple[str, Sequence[float]]],
              *, colors: Sequence[str] = ("#4c72b0", "#dd8452", "#55a868", "#c44e52"), width: int = _W,
              height: int = _H) -> str:
    """Grouped bars: one group per category, one bar per series, values printed on the bars."""
    values = [v for _, vs in series for v in vs] or [1.0]
    ya = _Axis(0.0, max(values) * 1.12, False, height - _M["bottom"], _M["top"])
    plot_w = width - _M["left"] - _M["right"]
    group_w = plot_w / max(len(categories), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    y0 = height - _M["bottom"]
    body = [f'<line x1="{_M["left"]}" y1="{y0}" x2="{width - _M["right"]}" y2="{y0}" stroke="#333"/>']
    for t in ya.ticks:
        y = ya(t)
        body.append(f'<line x1="{_M["left"]}" y1="{y:.1f}" x2="{width - _M["right"]}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        body.append(f'<text x="{_M["left"] - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_fmt(t)}</text>')
    legend = []
    for j, (name, vs) in enumerate(series):
        color = colors[j % len(colors)]
        legend.append((name, color, False))
        for i, v in enumerate(vs):
            x = _M["left"] + i * group_w + group_w * 0.1 + j * bar_w
            y = ya(v)
            body.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w * 0.92:.1f}" height="{y0 - y:.1f}" '
                        f'fill="{color}"><title>{escape(categories[i])} {escape(name)}: {v:g}</title></rect>')
            body.append(f'<text x="{x + bar_w * 0.46:.1f}" y="{y - 4:.1f}" text-anchor="middle" '
                        f'font-size="10">{_fmt(v)}</text>')
    for i, c in enumerate(categories):
        body.append(f'<text x="{_M["left"] + (i + 0.5) * group_w:.1f}" y="{y0 + 18}" text-anchor="middle" '
                    f'font-size="12">{escape(c)}</text>')
    return _frame(title, "", y_label, body, legend, width, height)
