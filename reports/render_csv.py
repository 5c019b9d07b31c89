"""The report as a zip of CSV files: ``summary.csv`` (every figure) and one file per table.

The cells are the XLSX's cells (:mod:`reports.tabular`): numbers as plain
numbers with a dot, dates and times as local ISO text in the configured time
zone (the header names it), text neutralised against formula injection.
UTF-8 with a byte-order mark, because Excel otherwise reads "€" as "â‚¬".
"""

from __future__ import annotations

import io
import zipfile
from datetime import date, datetime

import pandas as pd

from reports.model import Report, Table
from reports.tabular import Cell, header, neutralise, row_cells, summary_table


def render_csv_zip(report: Report) -> bytes:
    buffer = io.BytesIO()
    stamp = report.generated_at.astimezone(report.tz).timetuple()[:6]
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        def add(name: str, text: str) -> None:
            info = zipfile.ZipInfo(f"{report.file_stem}/{name}", date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text.encode("utf-8-sig"))

        add("README.txt", _readme(report))
        add("summary.csv", table_csv(summary_table(report), report))
        for table in report.tables():
            add(f"{table.key}.csv", table_csv(table, report))
    return buffer.getvalue()


def table_csv(table: Table, report: Report) -> str:
    # A frame of the table's cells; object columns keep whole numbers whole and blanks blank.
    # QUOTE_MINIMAL is enough once cells are neutralised; quoting alone does not stop a formula.
    frame = pd.DataFrame([[_text(value) for value in row_cells(table, row, report.tz)] for row in table.rows],
                         columns=[neutralise(header(c, report.tz)) for c in table.columns], dtype=object)
    return frame.to_csv(index=False, lineterminator="\r\n")


def _text(value: Cell) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _readme(report: Report) -> str:
    lines = [report.title, f"Time zone: {report.period.timezone}",
             f"Generated: {report.generated_at.astimezone(report.tz):%Y-%m-%d %H:%M}", ""]
    lines += [neutralise(line) for line in report.summary.lines()]
    lines += ["", "Files:", "  summary.csv  every figure against the previous period"]
    lines += [f"  {t.key}.csv  {t.title}" for t in report.tables()]
    return "\r\n".join(lines) + "\r\n"
