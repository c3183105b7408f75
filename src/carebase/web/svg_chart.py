"""Trend charts as inline SVG, drawn on the server: no script, no style attributes (the CSP
allows neither), colours from the stylesheet's classes.

A chart has one or more series of (time, value) points on a shared time axis, an optional
normal band (the reference range), axis labels at the extremes, and a `<title>` on every
point for the pointer. The text alternative is the chart's `<title>`/`<desc>`; pages put the
values in a table beside it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT = 560, 200
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 12, 12, 28


@dataclass(slots=True)
class Series:
    """One line: its label and points (oldest first after `sorted_points`)."""

    label: str
    points: list[tuple[datetime, float]] = field(default_factory=list)

    def sorted_points(self) -> list[tuple[datetime, float]]:
        return sorted(self.points, key=lambda p: _stamp(p[0]))


def _stamp(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 or value.is_integer() else f"{value:.1f}"


def trend_svg(
    chart_id: str,
    title: str,
    unit: str,
    series: list[Series],
    band: tuple[float | None, float | None] = (None, None),
) -> Markup:
    """The SVG of one chart (empty Markup when no series has a point)."""
    lines = [(s.label, s.sorted_points()) for s in series if s.points]
    if not lines:
        return Markup("")
    stamps = [_stamp(t) for _, pts in lines for t, _ in pts]
    values = [v for _, pts in lines for _, v in pts]
    low_band, high_band = band
    span_values = values + [v for v in (low_band, high_band) if v is not None]
    vmin, vmax = min(span_values), max(span_values)
    if vmax == vmin:
        vmin, vmax = vmin - 1, vmax + 1
    pad = (vmax - vmin) * 0.08
    vmin, vmax = vmin - pad, vmax + pad
    tmin, tmax = min(stamps), max(stamps)
    if tmax == tmin:
        tmin, tmax = tmin - 86400, tmax + 86400
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM

    def x(moment: datetime) -> float:
        return _LEFT + (_stamp(moment) - tmin) / (tmax - tmin) * plot_w

    def y(value: float) -> float:
        return _TOP + (vmax - value) / (vmax - vmin) * plot_h

    first = min((pts[0][0] for _, pts in lines), key=_stamp)
    last = max((pts[-1][0] for _, pts in lines), key=_stamp)
    label = escape(title)
    desc = escape(
        "; ".join(
            f"{name}: {len(pts)} values, latest {_fmt(pts[-1][1])} {unit}" for name, pts in lines
        )
    )
    out = [
        f'<svg class="trend" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="{escape(chart_id)}-t {escape(chart_id)}-d" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-t">{label} ({escape(unit)})</title>',
        f'<desc id="{escape(chart_id)}-d">{desc}</desc>',
    ]
    if low_band is not None or high_band is not None:
        top = y(high_band) if high_band is not None else _TOP
        bottom = y(low_band) if low_band is not None else _TOP + plot_h
        out.append(
            f'<rect class="band" x="{_LEFT}" y="{top:.1f}" width="{plot_w}" '
            f'height="{max(bottom - top, 0):.1f}"/>'
        )
    out.append(
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_LEFT + plot_w}" '
        f'y2="{_TOP + plot_h}"/><line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" '
        f'y2="{_TOP + plot_h}"/>'
    )
    for value in (vmin + pad, vmax - pad):
        out.append(
            f'<text class="tick" x="{_LEFT - 6}" y="{y(value) + 4:.1f}" '
            f'text-anchor="end">{_fmt(value)}</text>'
        )
    out.append(
        f'<text class="tick" x="{_LEFT}" y="{HEIGHT - 8}">{first.date().isoformat()}</text>'
        f'<text class="tick" x="{_LEFT + plot_w}" y="{HEIGHT - 8}" '
        f'text-anchor="end">{last.date().isoformat()}</text>'
    )
    for index, (name, pts) in enumerate(lines):
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
        out.append(f'<g class="series series-{index % 4}"><polyline points="{path}"/>')
        for t, v in pts:
            out.append(
                f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="3"><title>{escape(name)} '
                f"{_fmt(v)} {escape(unit)}, {t.date().isoformat()}</title></circle>"
            )
        out.append("</g>")
    out.append("</svg>")
    return Markup("".join(out))
