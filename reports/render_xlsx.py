"""The report as an Excel workbook: a summary sheet first, then one sheet per table.

Numbers are numeric cells with a number format (money in major units, rates
as percentages, durations in ms), dates are Excel dates in the configured
time zone (Excel has no time zones, so they are naive and the header names
the zone), and text goes through :func:`reports.tabular.neutralise`.  Text is
written with ``write_string`` and xlsxwriter's string-to-formula/URL/number
guessing is off, so nothing a customer typed becomes a formula or a link.
"""

from __future__ import annotations

import io
from datetime import date, datetime

import xlsxwriter

from metrics.format import ZERO_DECIMAL
from reports.model import Report, Table
from reports.tabular import Cell, header, neutralise, row_cells, summary_table

SHEET_NAME_MAX = 31  # Excel's limit
MAX_WIDTH = 60

NUMBER_FORMATS = {
    "count": "#,##0",
    "rate": "0.00%",
    "ms": "#,##0",
    "bytes": "#,##0",
    "percent": '0.0"%"',
    "datetime": "yyyy-mm-dd hh:mm",
    "hour": "yyyy-mm-dd hh:mm",
    "date": "yyyy-mm-dd ddd",
}


def _money_format(currency: str | None) -> str:
    digits = "#,##0" if currency and currency.lower() in ZERO_DECIMAL else "#,##0.00"
    return f'{digits} "{currency.upper()}"' if currency else digits


class _Formats:
    """xlsxwriter wants one Format object per distinct format; made once, on first use."""

    def __init__(self, book: xlsxwriter.Workbook):
        self.book = book
        self.cache: dict[str, object] = {}
        self.header = book.add_format({"bold": True, "bg_color": "#E8EEF4", "bottom": 1, "text_wrap": True,
                                       "valign": "top"})
        self.title = book.add_format({"bold": True, "font_size": 14})
        self.bold = book.add_format({"bold": True})
        self.missed = book.add_format({"font_color": "#B42318", "bold": True})

    def number(self, spec: str):
        if spec not in self.cache:
            self.cache[spec] = self.book.add_format({"num_format": spec})
        return self.cache[spec]


def render_xlsx(report: Report) -> bytes:
    buffer = io.BytesIO()
    book = xlsxwriter.Workbook(buffer, {
        "in_memory": True,
        "strings_to_formulas": False,
        "strings_to_urls": False,
        "strings_to_numbers": False,
    })
    book.set_properties({"title": report.title, "subject": "Paywatch review", "author": "Paywatch"})
    formats = _Formats(book)
    names: set[str] = set()
    _summary_sheet(book, report, formats, names)
    for table in report.tables():
        sheet = book.add_worksheet(_sheet_name(table.key, names))
        sheet.write_string(0, 0, neutralise(table.title), formats.title)
        first_row = 1
        if table.note:
            sheet.write_string(1, 0, neutralise(table.note))
            first_row = 2
        _write_table(sheet, table, report, formats, first_row + 1)
    book.close()
    return buffer.getvalue()


def _summary_sheet(book, report: Report, formats: _Formats, names: set[str]) -> None:
    sheet = book.add_worksheet(_sheet_name("Summary", names))
    sheet.write_string(0, 0, report.title, formats.title)
    sheet.write_string(1, 0, "Time zone")
    sheet.write_string(1, 1, report.period.timezone)
    sheet.write_string(2, 0, "Generated")
    sheet.write_datetime(2, 1, report.generated_at.astimezone(report.tz).replace(tzinfo=None),
                         formats.number(NUMBER_FORMATS["datetime"]))
    row = 4
    for line in report.summary.lines():
        style = formats.missed if line.startswith("Target missed") else None
        sheet.write_string(row, 0, neutralise(line), style)
        row += 1
    _write_table(sheet, summary_table(report), report, formats, row + 1, widths_from=row + 1)


def _write_table(sheet, table: Table, report: Report, formats: _Formats, top: int, widths_from: int | None = None) -> None:
    tz = report.tz
    widths = [len(header(c, tz)) for c in table.columns]
    for col, column in enumerate(table.columns):
        sheet.write_string(top, col, neutralise(header(column, tz)), formats.header)
    for r, row in enumerate(table.rows, start=top + 1):
        for col, (column, value) in enumerate(zip(table.columns, row_cells(table, row, tz))):
            unit = row.get(column.unit_key, column.unit) if column.unit_key else column.unit
            _write_cell(sheet, r, col, value, unit, table.currency_of(column, row), formats)
            widths[col] = max(widths[col], _width(value, unit))
    if not table.rows:
        sheet.write_string(top + 1, 0, "(nothing in this period)")
    for col, width in enumerate(widths):
        sheet.set_column(col, col, min(MAX_WIDTH, width + 2))
    sheet.freeze_panes(top + 1, 0)
    if table.rows:
        sheet.autofilter(top, 0, top + len(table.rows), len(table.columns) - 1)


def _write_cell(sheet, r: int, c: int, value: Cell, unit: str, currency: str | None, formats: _Formats) -> None:
    if value is None:
        return
    if isinstance(value, (datetime, date)):
        if not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day)
        sheet.write_datetime(r, c, value, formats.number(NUMBER_FORMATS.get(unit, "yyyy-mm-dd hh:mm")))
    elif isinstance(value, (int, float)):
        spec = _money_format(currency) if unit == "money" else NUMBER_FORMATS.get(unit, "General")
        sheet.write_number(r, c, value, formats.number(spec))
    else:
        sheet.write_string(r, c, value)


def _width(value: Cell, unit: str) -> int:
    if value is None:
        return 0
    if isinstance(value, (datetime, date)):
        return 16
    if isinstance(value, (int, float)):
        return len(f"{value:,.2f}") + (4 if unit == "money" else 0)
    return len(value)


def _sheet_name(key: str, taken: set[str]) -> str:
    """Unique, at most 31 characters, none of ``[]:*?/\\``."""
    base = "".join("_" if ch in "[]:*?/\\" else ch for ch in key)[:SHEET_NAME_MAX]
    name, n = base, 2
    while name.lower() in taken:
        suffix = f"_{n}"
        name, n = base[: SHEET_NAME_MAX - len(suffix)] + suffix, n + 1
    taken.add(name.lower())
    return name
