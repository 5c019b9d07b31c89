"""Docs cannot drift: every snapshot key, index and validity rule is described in docs/metrics.md."""

from __future__ import annotations

import re
from pathlib import Path

from metrics.db import source
from metrics.indexes import INDEXES
from metrics.quality import STATUSES
from metrics.snapshot import build_snapshot

DOC = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text()
# Maps whose keys are data (currencies, statuses), {avg, p95} pairs and the system figures
# are described as one key each.
LEAF_MAPS = {"revenue", "avg_transaction_value", "by_status", "processing_ms", "delivery_lag_ms",
             "activation_ms", "email_ms", "connections", "storage"}


def key_paths(tree: dict, prefix: str = "") -> list[str]:
    paths = []
    for key, value in tree.items():
        path = prefix + key
        # payments.revenue holds the periods, each a currency map
        leaf = (key in LEAF_MAPS and path != "payments.revenue") or prefix == "payments.revenue."
        if isinstance(value, dict) and value and not leaf:
            paths += key_paths(value, path + ".")
        else:
            paths.append(path)
    return paths


def test_every_snapshot_key_is_described(settings):
    snapshot = build_snapshot(source(settings), settings)
    documented = set(re.findall(r"`([a-z_0-9.]+)`", DOC))
    missing = [p for p in key_paths(snapshot) if p not in documented and p not in ("at", "timezone")]
    assert missing == []
    assert "**`at`**" in DOC and "PAYWATCH_TIMEZONE" in DOC


def test_every_index_is_listed_with_its_keys():
    for spec in INDEXES:
        keys = "{" + ", ".join(f"{field}: {direction}" for field, direction in spec.keys) + "}"
        assert f"| {spec.collection} | `{keys}` |" in DOC, keys


def test_every_valid_status_is_named_in_the_data_quality_rules():
    section = DOC.split("## Data quality")[1].split("##")[0]
    for collection, statuses in STATUSES.items():
        row = next(line for line in section.splitlines() if line.startswith(f"| {collection} |"))
        assert all(f"`{status}`" in row for status in statuses), collection
