"""Tiny inline-SVG charts for offline reports (no JavaScript, no CDN, no plotting library).

Each function returns one ``<svg>`` element as a string; every label is escaped.
Values are fractions in [0, 1] and drawn as percentages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

#: Okabe-Ito, readable for colour-blind readers, then a few more.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000", "#999999", "#7F3C8D", "#11A579", "#3969AC")
_FONT = 'font-family="system-ui,-apple-system,Segoe UI,sans-serif" font-size="11"'


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def text_color(fill: str) -> str:
    """Black or white, whichever reads better on ``fill`` (#rrggbb)."""
    r, g, b = (int(fill[i:i + 2], 16) for i in (1, 3, 5))
    return "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#fff"


def _legend(labels: Sequence[str], x: float, y: float, *, dashes: Sequence[str] = (),
            colors: Sequence[int] = ()) -> str:
    parts = []
    for i, label in enumerate(labels):
        yy = y + i * 16
        dash = f' stroke-dasharray="{dashes[i]}"' if i < len(dashes) and dashes[i] else ""
        c = color(colors[i] if i < len(colors) else i)
        width = 3 if dash else 6
        parts.append(f'<line x1="{x}" y1="{yy}" x2="{x + 18}" y2="{yy}" stroke="{c}" '
                     f'stroke-width="{width}"{dash}/>'
                     f'<text x="{x + 24}" y="{yy + 4}">{escape(label)}</text>')
    return "".join(parts)


def _y_axis(left: float, top: float, height: float, width: float, ticks: int = 5) -> str:
    parts = []
    for i in range(ticks + 1):
        frac = i / ticks
        y = top + height - frac * height
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" '
                     f'stroke="#e5e5e5"/><text x="{left - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{frac * 100:.0f}%</text>')
    return "".join(parts)


def grouped_bars(groups: Sequence[str], series: Sequence[tuple[str, Sequence[float | None],
                                                             Sequence[Sequence[float] | None]]],
                 *, title: str = "", height: int = 300) -> str:
    """Vertical bars per group (dataset) and series (model), with interval whiskers."""
    n_series = max(1, len(series))
    bar_w = max(6, min(28, 220 // (n_series * max(1, len(groups)) // 2 + 1)))
    group_w = n_series * bar_w + 18
    left, top, bottom = 48, 24, 64
    legend_w = 180
    plot_w = max(200, group_w * len(groups))
    width = left + plot_w + legend_w
    plot_h = height - top - bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" {_FONT} role="img">',
           f'<title>{escape(title)}</title>', _y_axis(left, top, plot_h, plot_w)]
    for gi, group in enumerate(groups):
        gx = left + gi * group_w + 9
        for si, (label, values, intervals) in enumerate(series):
            value = values[gi] if gi < len(values) else None
            if value is None:
                continue
            x = gx + si * bar_w
            h = value * plot_h
            y = top + plot_h - h
            tip = f'<title>{escape(label)} · {escape(group)}: {value * 100:.1f}%</title>'
            if h < 2:  # a 0% bar stays visible: a stub on the axis and its value
                out.append(f'<rect class="zero" x="{x:.1f}" y="{top + plot_h - 2:.1f}" '
                           f'width="{bar_w - 2}" height="2" fill="{color(si)}" '
                           f'stroke="{color(si)}">{tip}</rect>'
                           f'<text x="{x + (bar_w - 2) / 2:.1f}" y="{top + plot_h - 5:.1f}" '
                           f'text-anchor="middle" font-size="9">{value * 100:.0f}%</text>')
            else:
                out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 2}" '
                           f'height="{h:.1f}" fill="{color(si)}">{tip}</rect>')
            ci = intervals[gi] if gi < len(intervals) else None
            if ci:
                cx = x + (bar_w - 2) / 2
                y_lo = top + plot_h - ci[0] * plot_h
                y_hi = top + plot_h - ci[1] * plot_h
                out.append(f'<path d="M{cx:.1f},{y_lo:.1f}V{y_hi:.1f}M{cx - 3:.1f},{y_lo:.1f}'
                           f'h6M{cx - 3:.1f},{y_hi:.1f}h6" stroke="#333" fill="none"/>')
        tx = gx + n_series * bar_w / 2
        out.append(f'<text x="{tx:.1f}" y="{top + plot_h + 14}" text-anchor="end" '
                   f'transform="rotate(-30 {tx:.1f} {top + plot_h + 14})">{escape(group)}</text>')
    out.append(_legend([s[0] for s in series], left + plot_w + 16, top + 6))
    out.append("</svg>")
    return "".join(out)


def line_chart(series: Sequence[tuple[str, Mapping[int, float], str, int]], *,
               title: str = "", x_label: str = "k", height: int = 280, width: int = 560) -> str:
    """Lines over integer x (k), y in [0, 1]; each series is ``(label, {k: y}, dash pattern
    ("" = solid, e.g. "6,3"), colour index)``."""
    left, top, bottom, legend_w = 48, 24, 40, 300
    height = max(height, top + bottom + 16 * len(series))
    plot_w = width - left - legend_w
    plot_h = height - top - bottom
    xs = sorted({k for s in series for k in s[1]}) or [1]
    x_min, x_max = xs[0], xs[-1]

    def px(k: int) -> float:
        return left + (0.5 if x_max == x_min else (k - x_min) / (x_max - x_min)) * plot_w

    def py(v: float) -> float:
        return top + plot_h - v * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" {_FONT} role="img">',
           f'<title>{escape(title)}</title>', _y_axis(left, top, plot_h, plot_w)]
    step = max(1, len(xs) // 12)
    for k in xs[::step]:
        out.append(f'<text x="{px(k):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{k}</text>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">'
               f'{escape(x_label)}</text>')
    for label, pts, dashes, ci in series:
        ks = sorted(pts)
        if not ks:
            continue
        dash = f' stroke-dasharray="{dashes}"' if dashes else ""
        path = "".join(f'{"M" if j == 0 else "L"}{px(k):.1f},{py(pts[k]):.1f}'
                       for j, k in enumerate(ks))
        out.append(f'<path d="{path}" stroke="{color(ci)}" stroke-width="2" fill="none"{dash}/>')
        for k in ks:
            out.append(f'<circle cx="{px(k):.1f}" cy="{py(pts[k]):.1f}" r="2.5" '
                       f'fill="{color(ci)}"><title>{escape(label)} k={k}: '
                       f'{pts[k] * 100:.1f}%</title></circle>')
    out.append(_legend([s[0] for s in series], left + plot_w + 16, top + 6,
                       dashes=[s[2] for s in series], colors=[s[3] for s in series]))
    out.append("</svg>")
    return "".join(out)


def stacked_bars(rows: Sequence[tuple[str, Mapping[str, float]]], categories: Sequence[str],
                 labels: Mapping[str, str] | None = None, *, title: str = "",
                 width: int = 640) -> str:
    """One horizontal 100% bar per row (model), split into ``categories`` shares."""
    labels = labels or {}
    left, top, row_h, legend_h = 150, 10, 24, 18
    plot_w = width - left - 20
    cols = max(1, min(len(categories), 3))
    height = top + len(rows) * row_h + 16 + legend_h * ((len(categories) + cols - 1) // cols)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" {_FONT} role="img">',
           f'<title>{escape(title)}</title>']
    for ri, (row, shares) in enumerate(rows):
        y = top + ri * row_h
        out.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{escape(row)}</text>')
        total = sum(max(0.0, shares.get(c, 0.0)) for c in categories)
        x = float(left)
        for ci, cat in enumerate(categories):
            share = max(0.0, shares.get(cat, 0.0)) / total if total else 0.0
            if share <= 0:
                continue
            w = share * plot_w
            out.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
                       f'fill="{color(ci)}"><title>{escape(row)} · '
                       f'{escape(labels.get(cat, cat))}: {share * 100:.1f}%</title></rect>')
            if w > 34:
                out.append(f'<text x="{x + w / 2:.1f}" y="{y + 16}" text-anchor="middle" '
                           f'fill="{text_color(color(ci))}">{share * 100:.0f}%</text>')
            x += w
        if not total:
            out.append(f'<text x="{left}" y="{y + 15}" fill="#888">(none)</text>')
    ly = top + len(rows) * row_h + 12
    col_w = plot_w / cols
    for ci, cat in enumerate(categories):
        lx = left + (ci % cols) * col_w
        yy = ly + (ci // cols) * legend_h
        out.append(f'<rect x="{lx:.1f}" y="{yy}" width="12" height="12" fill="{color(ci)}"/>'
                   f'<text x="{lx + 16:.1f}" y="{yy + 10}">{escape(labels.get(cat, cat))}</text>')
    out.append("</svg>")
    return "".join(out)
