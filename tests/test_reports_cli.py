"""``python -m reports``: files written, progress on stderr, one line per problem."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import openpyxl
import pytest

from demo.seed import seed
from metrics.embedded import free_port
from reports.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)  # a Monday: 2026-W47 is complete


@pytest.fixture
def env(monkeypatch, mongo_uri, db_names, tmp_path):
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("PAYWATCH_SOURCE_DB", db_names[0])
    monkeypatch.setenv("PAYWATCH_DB", db_names[1])
    monkeypatch.setenv("PAYWATCH_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("PAYWATCH_SERVER_SELECTION_TIMEOUT_MS", "1500")
    return monkeypatch


@pytest.fixture
def seeded(env, platform_db, settings):
    return seed(platform_db, settings.schema, days=10, per_day=15, now=NOW)


def test_weekly_writes_all_three_files_and_says_what_it_does_on_stderr(seeded, tmp_path, capsys):
    assert main(["weekly", "--week", "2026-W47", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    names = sorted(Path(line).name for line in out.split())
    assert names == ["paywatch-weekly-2026-W47.html", "paywatch-weekly-2026-W47.xlsx", "paywatch-weekly-2026-W47.zip"]
    assert "building the weekly report for Week 2026-W47" in err and "wrote" in err
    assert (tmp_path / names[0]).read_bytes().startswith(b"<!DOCTYPE html>")
    assert openpyxl.load_workbook(tmp_path / names[1]).sheetnames[0] == "Summary"
    with zipfile.ZipFile(tmp_path / names[2]) as archive:
        assert "paywatch-weekly-2026-W47/summary.csv" in archive.namelist()


def test_one_format_can_go_to_a_named_file(seeded, tmp_path, capsys):
    target = tmp_path / "sub" / "week.xlsx"
    assert main(["weekly", "--week", "2026-W47", "--format", "xlsx", "--out", str(target)]) == 0
    assert target.is_file() and capsys.readouterr().out.strip() == str(target)


def test_monthly_builds_the_month_against_the_month_before(seeded, tmp_path, capsys):
    assert main(["monthly", "--month", "2026-10", "--format", "csv", "--out", str(tmp_path)]) == 0
    with zipfile.ZipFile(tmp_path / "paywatch-monthly-2026-10.zip") as archive:
        readme = archive.read("paywatch-monthly-2026-10/README.txt").decode("utf-8-sig")
    assert "Month 2026-10" in readme


@pytest.mark.parametrize("args, words", [
    (["weekly", "--week", "2026-W60"], "not an ISO week"),
    (["weekly", "--week", "2999-W01"], "has not ended yet"),
    (["monthly", "--month", "October"], "not a month"),
])
def test_a_bad_period_is_one_line_and_exit_code_2(env, tmp_path, capsys, args, words):
    assert main(args + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_a_database_that_does_not_answer_is_one_line_and_exit_code_1(env, tmp_path, capsys):
    env.setenv("MONGODB_URI", f"mongodb://127.0.0.1:{free_port()}/?directConnection=true")
    assert main(["weekly", "--week", "2026-W47", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("paywatch: data source unavailable:") and "Traceback" not in "\n".join(err)


def test_help_explains_the_commands():
    result = subprocess.run([sys.executable, "-m", "reports", "weekly", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines at the terminal width
    assert "--week" in text and "the last complete week" in text and "--format" in text
