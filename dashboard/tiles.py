"""A tile for a catalogue metric: its label, help and delta colour come from ``metrics.catalogue``.

The pages give the value, the change and the page's own notes; what a figure
is called and what it means is written once, in the catalogue.
"""

from __future__ import annotations

from dashboard.common import Tile
from metrics.catalogue import METRICS

# A rise is green where higher is better, red where lower is, grey where neither.
DELTA_COLOR = {"higher": "normal", "lower": "inverse", "neither": "off"}


def metric_tile(key: str, value: str | None, *, label: str | None = None, also: str | None = None,
                **more) -> Tile:
    """``Tile`` for ``METRICS[key]``; ``label`` replaces its tile label, ``also`` is added to its help."""
    m = METRICS[key]
    more.setdefault("delta_color", DELTA_COLOR[m.better])
    more.setdefault("help", m.definition + (f" {also}" if also else ""))
    return Tile(label or m.tile_label, value, **more)
