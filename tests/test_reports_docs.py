"""Docs cannot drift: every [reports] key, section and file of the report is described in docs/reports.md."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from metrics import db as dbmod
from reports.job import ReportsConfig
from reports.model import build_report
from reports.periods import parse_month, parse_week

DOC = (Path(__file__).resolve().parent.parent / "docs" / "reports.md").read_text()
# Tables that only exist with data from Paywatch's own records, or only in a monthly report.
CONDITIONAL_TABLES = ("alerts_by_rule", "silences", "reconcile_by_kind", "reconcile_mismatches", "webhooks_by_day")


def test_every_reports_setting_is_described():
    missing = [name for name in ReportsConfig.model_fields if f"| `{name}` |" not in DOC]
    assert not missing, f"[reports] keys without a row in docs/reports.md: {missing}"


def test_every_section_and_table_of_the_report_is_described(make_settings):
    settings = make_settings()
    tz = ZoneInfo("UTC")
    keys, titles = set(CONDITIONAL_TABLES), set()
    for period in (parse_week("2026-W47", tz), parse_month("2026-10", tz)):
        report = build_report(dbmod.source(settings), settings, period)
        keys |= {t.key for t in report.tables()}
        titles |= {s.title for s in report.sections}
    assert [k for k in sorted(keys) if f"`{k}`" not in DOC] == []
    assert [t for t in sorted(titles) if f"**{t}.**" not in DOC] == []


def test_the_documented_job_registration_names_a_real_function():
    import importlib

    line = next(line for line in DOC.splitlines() if line.startswith('JobSpec("weekly-report"'))
    module, _, func = line.split('"')[3].partition(":")
    assert callable(getattr(importlib.import_module(module), func))
    assert (Path(__file__).resolve().parent.parent / "docs" / "screenshots" / "report.png").is_file()
