"""The three renderings of a :class:`~reports.model.Report`, by name (the CLI, the job, the dashboard)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from reports.model import Report
from reports.render_csv import render_csv_zip
from reports.render_html import render_html
from reports.render_xlsx import render_xlsx


@dataclass(frozen=True)
class Format:
    extension: str
    mime: str
    render: Callable[[Report], bytes]


FORMATS: dict[str, Format] = {
    "html": Format("html", "text/html", render_html),
    "xlsx": Format("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", render_xlsx),
    "csv": Format("zip", "application/zip", render_csv_zip),
}


def render(report: Report, fmt: str) -> bytes:
    return FORMATS[fmt].render(report)


def file_name(report: Report, fmt: str) -> str:
    return f"{report.file_stem}.{FORMATS[fmt].extension}"
