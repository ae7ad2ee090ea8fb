"""The two pictures ray_style draws: a line chart (inline SVG, for the page and the report)
and a contact sheet (rows of image tiles with labels: the report's, preview's and the
seed's reconstruction figure). Pure: arrays and points in, markup or an array out.
"""
from __future__ import annotations

import html

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CHART_POINTS = 600  # a chart of 170,000 frames is drawn from this many bins
COLOURS = ("#2563eb", "#d9480f", "#2f9e44", "#862e9c")


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _axis(value: float) -> str:
    """A short axis label: 5.21e8, not 5.21e+08 (the margin holds about 8 characters)."""
    return f"{value:.3g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def _binned(points: np.ndarray, max_points: int) -> np.ndarray:
    """More than ``max_points`` ``(x, y)`` points averaged into that many bins of x."""
    xs, ys = points[:, 0], points[:, 1]
    if len(xs) <= max_points:
        return points
    bins = np.minimum(((xs - xs[0]) / max(xs[-1] - xs[0], 1) * max_points).astype(int), max_points - 1)
    counts = np.bincount(bins, minlength=max_points)
    keep = counts > 0
    return np.stack([np.bincount(bins, xs, max_points)[keep] / counts[keep],
                     np.bincount(bins, ys, max_points)[keep] / counts[keep]], axis=1)


def chart_svg(series, title: str, *, marks=(), width: int = 470, height: int = 170,
              max_points: int = CHART_POINTS) -> str:
    """An inline SVG line chart. ``series``: ``(x, y)`` points (a list of pairs or an ``(N, 2)``
    array, x ascending), or ``{name: points}`` for several lines with a legend. Non-finite y
    are left out; more than ``max_points`` per line are averaged into that many bins of x,
    so a page stays small for long videos. ``marks``: x values drawn as vertical lines (seams)."""
    named = series if isinstance(series, dict) else {"": series}
    lines = {}
    for name, points in named.items():
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        points = points[np.isfinite(points[:, 1])]
        if len(points):
            lines[name] = _binned(points, max_points)
    legend = len(named) > 1
    left, right, top, bottom = 62, width - 8, 36 if legend else 22, height - 22
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
             f'<text x="{left}" y="14" class="t">{_e(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" class="frame"/>']
    if not lines:
        parts.append(f'<text x="{left + 8}" y="{(top + bottom) // 2}" class="l">no values yet</text></svg>')
        return "".join(parts)
    everything = np.concatenate(list(lines.values()))
    x_low, x_high = everything[:, 0].min(), everything[:, 0].max()
    y_low, y_high = everything[:, 1].min(), everything[:, 1].max()
    x_of = lambda x: left + (right - left) * (x - x_low) / ((x_high - x_low) or 1.0)  # noqa: E731
    y_of = lambda y: bottom - (bottom - top) * (y - y_low) / ((y_high - y_low) or 1.0)  # noqa: E731
    for mark in marks:
        if x_low <= mark <= x_high:
            parts.append(f'<line x1="{x_of(mark):.1f}" y1="{top}" x2="{x_of(mark):.1f}" y2="{bottom}" class="mark"/>')
    for colour, (name, points) in zip(COLOURS * 8, named.items()):
        if name not in lines:
            continue
        px, py = x_of(lines[name][:, 0]), y_of(lines[name][:, 1])
        if len(px) == 1:
            parts.append(f'<circle cx="{px[0]:.1f}" cy="{py[0]:.1f}" r="3" class="p" fill="{colour}"/>')
        else:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(px, py))
            parts.append(f'<polyline points="{coords}" class="line" stroke="{colour}"/>')
    if legend:
        x = left
        for colour, name in zip(COLOURS * 8, named):
            parts.append(f'<line x1="{x}" y1="27" x2="{x + 14}" y2="27" stroke="{colour}" stroke-width="3"/>'
                         f'<text x="{x + 18}" y="31" class="l">{_e(name)}</text>')
            x += 30 + 6 * len(name)
    parts += [f'<text x="{left - 4}" y="{top + 9}" class="l r">{_axis(float(y_high))}</text>',
              f'<text x="{left - 4}" y="{bottom}" class="l r">{_axis(float(y_low))}</text>',
              f'<text x="{left}" y="{height - 6}" class="l">frame {int(x_low)}</text>',
              f'<text x="{right}" y="{height - 6}" class="l r">frame {int(x_high)}</text></svg>']
    return "".join(parts)


CHART_CSS = ("svg .t{font:600 13px system-ui,sans-serif}svg .l{font:11px system-ui,sans-serif;fill:#555}"
             "svg .r{text-anchor:end}svg .frame{fill:none;stroke:#ddd}svg .line{fill:none;stroke-width:1.5}"
             "svg .mark{stroke:#e8a0a0;stroke-width:1}")


def chart_file(series, title: str, **options) -> str:
    """:func:`chart_svg` as a standalone ``.svg`` document (its styles inside it)."""
    svg = chart_svg(series, title, **options)
    head, rest = svg.split(">", 1)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{head}><style>{CHART_CSS}</style>{rest}\n'


def _fitted(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` px."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def contact_sheet(rows: list[tuple[str | None, list[tuple[str | None, np.ndarray]]]],
                  tile: tuple[int, int] | None = None, pad: int = 0) -> np.ndarray:
    """Rows of tiles on white: each row an optional label above it (across the sheet), each
    tile ``(caption or None, (H, W, 3) uint8 image)`` fitted into ``tile`` (width, height;
    default the first image's size) with its aspect kept, an optional caption below it.
    Labels and captions that do not fit are cut with an ellipsis, never drawn over a
    neighbour."""
    first = rows[0][1][0][1]
    tile_w, tile_h = tile or (first.shape[1], first.shape[0])
    font = ImageFont.load_default(size=12)
    line = 16
    columns = max(len(tiles) for _, tiles in rows)
    width = columns * (tile_w + pad) + pad
    heights = [(line if label else 0) + tile_h + (line if any(c for c, _ in tiles) else 0) + pad
               for label, tiles in rows]
    canvas = Image.new("RGB", (width, sum(heights) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    y = pad
    for (label, tiles), row_height in zip(rows, heights):
        if label:
            draw.text((pad + 3, y + 2), _fitted(draw, label, font, width - 2 * pad - 6), fill="black", font=font)
            y += line
        for column, (caption, image) in enumerate(tiles):
            x = pad + column * (tile_w + pad)
            picture = Image.fromarray(image)
            scale = min(tile_w / picture.width, tile_h / picture.height)
            picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                     Image.Resampling.LANCZOS)
            canvas.paste(picture, (x, y))
            if caption:
                draw.text((x + 2, y + tile_h + 2), _fitted(draw, caption, font, tile_w - 4), fill="black", font=font)
        y += row_height - (line if label else 0)
    return np.asarray(canvas)


__all__ = ["chart_svg", "chart_file", "contact_sheet", "CHART_CSS", "CHART_POINTS"]
