"""The calibration curve as plain SVG, and the monitoring report written to a folder.

SVG by string building: a dozen circles and a diagonal need no plotting library, the file
opens in any browser and embeds in an HTML report as it is. Files are written atomically
(temporary file, then ``os.replace``), so a run that fails never leaves half a table for a
dashboard to read.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

PLOT, LEFT, RIGHT, TOP, BOTTOM = 300, 60, 20, 40, 50  # pixels: square plot area, margins
WIDTH, HEIGHT = LEFT + PLOT + RIGHT, TOP + PLOT + BOTTOM
MIN_RADIUS, MAX_RADIUS = 3.0, 12.0
MAX_TICKS = 5
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # not allowed in XML 1.0


def reliability_svg(bins: pd.DataFrame, title: str) -> str:
    """The calibration curve of ``reliability_bins``: observed against mean predicted per
    bin, each point's area proportional to its shows, with the diagonal a calibrated model
    follows. Both axes run from 0 to the same rounded maximum so the diagonal is at 45°."""
    missing = [c for c in ("predicted", "observed", "shows") if c not in bins.columns]
    if missing:
        raise ValueError(f"bins lacks column(s) {missing}; pass reliability_bins' table")
    predicted = bins["predicted"].to_numpy(dtype=np.float64, na_value=np.nan)
    observed = bins["observed"].to_numpy(dtype=np.float64, na_value=np.nan)
    shows = bins["shows"].to_numpy(dtype=np.float64, na_value=np.nan)
    values = np.concatenate([predicted, observed, shows])
    if np.isnan(values).any() or (values < 0).any():
        raise ValueError("bins holds missing or negative values; rates and shows must be >= 0")
    top, step = _axis(float(max(predicted.max(initial=0.0), observed.max(initial=0.0))))
    scale = PLOT / top
    xs, ys = LEFT + predicted * scale, TOP + PLOT - observed * scale
    radii = MIN_RADIUS + (MAX_RADIUS - MIN_RADIUS) * np.sqrt(shows / max(shows.max(initial=0), 1))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
        f'<text x="{WIDTH / 2:.1f}" y="20" text-anchor="middle" font-size="14">'
        f"{_text(title)}</text>",
        f'<rect x="{LEFT}" y="{TOP}" width="{PLOT}" height="{PLOT}" fill="none" stroke="#999"/>',
        *_ticks(top, step, scale),
        f'<line x1="{LEFT}" y1="{TOP + PLOT}" x2="{LEFT + PLOT}" y2="{TOP}" stroke="#bbb" '
        'stroke-dasharray="4 3"/>',
        f'<text x="{LEFT + PLOT / 2}" y="{HEIGHT - 10}" text-anchor="middle">predicted</text>',
        f'<text x="15" y="{TOP + PLOT / 2}" text-anchor="middle" '
        f'transform="rotate(-90 15 {TOP + PLOT / 2})">observed</text>',
    ]
    if len(xs) > 1:
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
        parts.append(f'<polyline points="{points}" fill="none" stroke="#1f77b4"/>')
    parts += [
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="#1f77b4" fill-opacity="0.6">'
        f"<title>predicted {p:.4f}, observed {o:.4f}, {int(n)} shows</title></circle>"
        for x, y, r, p, o, n in zip(xs, ys, radii, predicted, observed, shows, strict=True)
    ]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_report(directory: Path, tables: Mapping[str, pd.DataFrame],
                 svgs: Mapping[str, str]) -> list[Path]:
    """Write each table as ``<name>.csv`` and each SVG as ``<name>.svg`` in ``directory``
    (created if need be), each file atomically; return the paths, tables first.

    A table's index is written only when it carries information (not a plain RangeIndex).
    Names are plain file stems (letters, digits, ``._-``) so none can escape the folder.
    """
    bad = [name for name in (*tables, *svgs) if not _NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"report names {bad} are not plain file names; use letters, digits, "
                         "'.', '_' or '-', starting with a letter or digit")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in tables.items():
        plain = isinstance(table.index, pd.RangeIndex) and table.index.name is None
        text = table.to_csv(index=not plain, lineterminator="\n")
        written.append(_write_atomic(directory / f"{name}.csv", text))
    for name, svg in svgs.items():
        written.append(_write_atomic(directory / f"{name}.svg", svg))
    logger.info("monitoring report: %d file(s) in %s", len(written), directory)
    return written


def _axis(largest: float) -> tuple[float, float]:
    """The axis end and tick step: the smallest round step (1, 2 or 5 times a power of ten)
    whose at most MAX_TICKS multiples reach ``largest``, a rate in (0, 1]."""
    largest = min(max(largest, 1e-3), 1.0)
    power = 10.0 ** math.floor(math.log10(largest / MAX_TICKS))
    step = next(power * multiple for multiple in (1, 2, 5, 10)
                if math.ceil(largest / (power * multiple) - 1e-9) <= MAX_TICKS)
    return round(math.ceil(largest / step - 1e-9) * step, 10), step


def _ticks(top: float, step: float, scale: float) -> list[str]:
    """Tick labels on both axes: 0, step, ... top."""
    out = []
    for value in np.arange(0.0, top + step / 2, step):
        label, offset = f"{round(float(value), 10):g}", value * scale
        out.append(f'<text x="{LEFT + offset:.1f}" y="{TOP + PLOT + 16}" '
                   f'text-anchor="middle">{label}</text>')
        out.append(f'<text x="{LEFT - 6}" y="{TOP + PLOT - offset + 4:.1f}" '
                   f'text-anchor="end">{label}</text>')
    return out


def _text(value: str) -> str:
    """``value`` as XML character data: markup escaped, characters XML forbids removed."""
    return escape(_NOT_XML.sub("", str(value)))


def _write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place: a
    reader sees the old file or the whole new one, never part of it."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
