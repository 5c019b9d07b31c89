"""Chart labels are platform data: Plotly draws a subset of HTML in them, so they arrive escaped."""

from dashboard.charts import bar_chart


def test_a_decline_code_holding_a_link_is_drawn_as_text():
    fig = bar_chart(['<a href="https://evil.example">re-login</a>', "card_declined"], [3, 1],
                    title="Failed payments by decline code", value_title="Failed payments")
    labels = list(fig.data[0].y)
    assert labels[0] == '&lt;a href="https://evil.example"&gt;re-login&lt;/a&gt;'
    assert labels[1] == "card_declined"


import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from dashboard.charts import COUNT, SECONDS, money_axis, time_chart
from dashboard.views.alerts import timeline
from metrics.frames import series_frame
from metrics.windows import Window

LINK = '<a href="javascript:alert(1)">re-login</a>'
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def drawn_text(fig) -> str:
    """Every string Plotly will draw: trace names, categories, texts, hover data, titles, tick affixes."""
    return json.dumps(fig.to_plotly_json(), default=str)


def test_link_markup_in_a_subject_is_text_in_the_alerts_timeline():
    view = SimpleNamespace(window=Window(T0 - timedelta(hours=1), T0), tz=ZoneInfo("UTC"))
    transitions = [{"rule_id": "failed_payments", "subject": LINK, "at": T0 - timedelta(minutes=30),
                    "from": "pending", "to": "firing", "value_text": "<b>12</b>"},
                   {"rule_id": "failed_payments", "subject": LINK, "at": T0 - timedelta(minutes=10),
                    "from": "firing", "to": "resolved", "value_text": "3"}]
    text = drawn_text(timeline(transitions, view))
    assert "<a href" not in text and "<b>" not in text
    assert "&lt;a href" in text


def test_trace_names_titles_and_currency_affixes_are_escaped_in_every_chart():
    frame = series_frame([{"bucket": T0, "revenue": 1}, {"bucket": T0 + timedelta(hours=1), "revenue": 2}], "UTC")
    fig = time_chart(frame, [(LINK, "revenue", "#000")], title=f"Revenue {LINK}",
                     y_title=LINK, axis=money_axis("<b>x</b>"), line=(1.5, LINK))
    text = drawn_text(fig)
    assert "<a href" not in text and "<b>" not in text


def test_a_currency_that_is_not_text_draws_as_no_currency():
    assert money_axis(5)["ticksuffix"] == " XXX"


def test_a_time_chart_draws_a_series_frame_at_local_wall_clock_times_in_a_half_hour_zone():
    # Local midnights in Kolkata (UTC+05:30) are 18:30 UTC the day before.
    rows = [{"bucket": datetime(2026, 11, 19, 18, 30, tzinfo=timezone.utc), "failed": 3},
            {"bucket": datetime(2026, 11, 20, 18, 30, tzinfo=timezone.utc), "failed": 5}]
    fig = time_chart(series_frame(rows, "Asia/Kolkata"), [("Failed", "failed", "#000")],
                     title="Failed payments per day", y_title="Payments", axis=COUNT, kind="bar")
    assert list(fig.data[0].x) == [datetime(2026, 11, 20), datetime(2026, 11, 21)]
    assert list(fig.data[0].y) == [3, 5]
    assert fig.layout.xaxis.title.text == "Time (Asia/Kolkata)"


def test_a_bucket_without_a_value_is_a_gap_in_the_line_not_a_zero():
    rows = [{"bucket": T0 + timedelta(hours=h), "processing_ms": {"p95": p95, "avg": avg}}
            for h, (p95, avg) in enumerate([(1500.0, 900.0), (None, None), (2500.0, 1200.0)])]
    fig = time_chart(series_frame(rows, "UTC"), [("p95", "processing_ms.p95", "#d00"),
                                                 ("average", "processing_ms.avg", "#00d")],
                     title="Processing time per hour", y_title="Seconds", axis=SECONDS, line=(5000, "alert above 5 s"))
    p95, average = fig.data
    assert list(p95.y) == [1.5, None, 2.5] and list(average.y) == [0.9, None, 1.2]  # milliseconds drawn in seconds
    assert p95.connectgaps is False
    assert fig.layout.shapes[0].y0 == 5.0  # the target in the same unit as the line
    assert fig.layout.yaxis.range[1] == 5.0 * 1.15


def test_money_is_drawn_in_major_units_of_its_currency():
    rows = [{"bucket": T0, "revenue": {"usd": 123456, "jpy": 5000}}]
    frame = series_frame(rows, "UTC")
    dollars = time_chart(frame, [("Revenue", "revenue.usd", "#000")], title="Revenue", y_title="Revenue",
                         axis=money_axis("usd"), kind="bar")
    yen = time_chart(frame, [("Revenue", "revenue.jpy", "#000")], title="Revenue", y_title="Revenue",
                     axis=money_axis("jpy"), kind="bar")
    assert list(dollars.data[0].y) == [1234.56] and dollars.layout.yaxis.tickprefix == "$"
    assert list(yen.data[0].y) == [5000] and yen.layout.yaxis.tickprefix == "¥"


def test_a_stacked_chart_scales_its_axis_to_the_tallest_stack():
    rows = [{"bucket": T0, "ok": 6, "failed": 4}, {"bucket": T0 + timedelta(hours=1), "ok": 3, "failed": None}]
    fig = time_chart(series_frame(rows, "UTC"), [("Succeeded", "ok", "#0d0"), ("Failed", "failed", "#d00")],
                     title="Payments per hour", y_title="Payments", axis=COUNT, kind="bar", stacked=True)
    assert list(fig.data[1].y) == [4, None]
    assert fig.layout.barmode == "stack" and fig.layout.yaxis.range[1] == 10 * 1.15
