"""The report's tables as spreadsheet cells: shared by the XLSX and the CSV renderer.

One conversion for both files, so a CSV and a sheet of the same report hold
the same cells: money in major units (the currency's exponent, ISO 4217),
rates as fractions, durations in milliseconds, dates and times as naive local
values in the configured time zone (spreadsheets have no time zones; the
header names the zone), and every text cell passed through :func:`neutralise`.
"""

from __future__ import annotations

from datetime import date, datetime
from numbers import Number
from zoneinfo import ZoneInfo

from bson import Decimal128

from metrics.format import ZERO_DECIMAL
from metrics.windows import utc
from reports.model import Column, Figure, Report, Table

# OWASP "CSV Injection": a cell starting with one of these is run as a formula by
# Excel, LibreOffice or Google Sheets (=HYPERLINK(...) exfiltrates, @SUM(...) runs).
# https://owasp.org/www-community/attacks/CSV_Injection
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")

Cell = int | float | datetime | date | str | None


def neutralise(cell: object) -> object:
    """Text that a spreadsheet would run as a formula gets a leading apostrophe; numbers stay numbers.

    ``"=HYPERLINK(...)"`` -> ``"'=HYPERLINK(...)"``; ``-12.5`` (a float) is
    left alone, ``"-12.5"`` (text) is not: only real numbers are numbers.
    """
    if isinstance(cell, str) and cell.startswith(FORMULA_TRIGGERS):
        return "'" + cell
    return cell


def minor_to_major(minor: Number, currency: str | None) -> float | int:
    """``12345, "usd"`` -> ``123.45``; zero-decimal currencies (JPY) stay as they are."""
    if currency and currency.lower() in ZERO_DECIMAL:
        return minor
    return round(minor / 100, 2)


def _number(value: object) -> int | float | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Decimal128):
        value = float(str(value))
    if isinstance(value, (int, float)):
        return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 2**53 else value
    return None


def cell(value: object, unit: str, currency: str | None, tz: ZoneInfo) -> Cell:
    """One table value as a spreadsheet cell (see the module docstring)."""
    if value is None:
        return None
    if unit in ("datetime", "hour", "date"):
        if isinstance(value, datetime):
            local = utc(value).astimezone(tz).replace(tzinfo=None)
            return local.date() if unit == "date" else local
        if isinstance(value, date):
            return value
    if unit in ("count", "rate", "ms", "money", "bytes", "percent"):
        number = _number(value)
        if number is not None:
            return minor_to_major(number, currency) if unit == "money" else number
    # Text, or a value that is not what its column promises: shown as inert text.
    return neutralise(str(value))


def header(column: Column, tz: ZoneInfo) -> str:
    if column.unit in ("datetime", "hour"):
        return f"{column.label} ({tz.key})"
    if column.unit == "money" and column.currency:
        return column.label if column.currency.upper() in column.label else f"{column.label} ({column.currency.upper()})"
    if column.unit == "ms":
        return f"{column.label} (ms)"
    return column.label


def row_cells(table: Table, row: dict, tz: ZoneInfo) -> list[Cell]:
    return [cell(row.get(c.key), _unit(c, row), table.currency_of(c, row), tz) for c in table.columns]


def _unit(column: Column, row: dict) -> str:
    return row.get(column.unit_key, column.unit) if column.unit_key else column.unit


def summary_table(report: Report) -> Table:
    """Every figure of the report, one row each: the summary sheet and ``summary.csv``."""
    period = report.period
    columns = (
        Column("section", "Section"), Column("metric", "Metric"), Column("unit_text", "Unit"),
        Column("currency", "Currency"),
        Column("value", period.label, "count", unit_key="unit", currency_key="currency"),
        Column("previous", period.previous_label, "count", unit_key="unit", currency_key="currency"),
        Column("change", "Change", "count", unit_key="unit", currency_key="currency"),
        Column("target", "Target"), Column("status", "Status"),
    )
    rows = [_figure_row(section.title, fig) for section in report.sections for fig in section.figures]
    return Table("summary", "Summary", columns, rows)


def _figure_row(section: str, fig: Figure) -> dict:
    return {"section": section, "metric": fig.label, "unit": fig.unit, "unit_text": unit_label(fig.unit), "currency": fig.currency.upper() if fig.currency else None,
            "value": fig.value, "previous": fig.previous if fig.comparable else None, "change": fig.change,
            "target": fig.target or None, "status": fig.status}


def unit_label(unit: str) -> str:
    """What the Unit column says, so a reader of a bare CSV knows what a number is."""
    return {"count": "count", "rate": "fraction (0.98 = 98%)", "ms": "milliseconds", "money": "major units",
            "bytes": "bytes", "percent": "percent"}.get(unit, unit)
