"""Chart options: platform data is only ever a value or a name (ECharts draws it as text), values are
drawn in people's units at the configured zone's wall-clock times, and a missing value is a gap."""

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from dashboard.charts import COUNT, RATE, SECONDS, bar_chart, funnel_chart, money_axis, time_chart, wall_clock
from dashboard.views.alerts import timeline
from metrics.frames import series_frame
from metrics.windows import Window

LINK = '<a href="javascript:alert(1)">re-login {b} %d</a>'
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def templates(option) -> list[str]:
    """Every formatter template of an option: ECharts reads ``{b}`` in them, and a tooltip's as HTML."""
    found = []
    if isinstance(option, dict):
        for key, value in option.items():
            if key in ("formatter", "valueFormatter") and isinstance(value, str):
                found.append(value)
            else:
                found += templates(value)
    elif isinstance(option, list):
        for value in option:
            found += templates(value)
    return found


def test_a_decline_code_holding_a_link_is_a_category_as_written_and_in_no_template():
    chart = bar_chart([LINK, "card_declined"], [3, 1], title="Failed payments by decline code",
                      value_title="Failed payments")
    assert chart.option["yAxis"]["data"] == [LINK, "card_declined"]  # drawn on a canvas as text
    assert not any("href" in t or "{b}" in t for t in templates(chart.option))
    assert [item["label"]["formatter"] for item in chart.option["series"][0]["data"]] == ["3", "1"]


def test_a_subject_holding_a_link_is_a_row_and_a_tooltip_value_in_the_alerts_timeline():
    view = SimpleNamespace(window=Window(T0 - timedelta(hours=1), T0), tz=ZoneInfo("UTC"))
    transitions = [{"rule_id": "failed_payments", "subject": LINK, "at": T0 - timedelta(minutes=30),
                    "from": "pending", "to": "firing", "value_text": "<b>12</b>"},
                   {"rule_id": "failed_payments", "subject": LINK, "at": T0 - timedelta(minutes=10),
                    "from": "firing", "to": "resolved", "value_text": "3"}]
    option = timeline(transitions, view).option
    assert option["yAxis"]["data"] == [f"failed_payments [{LINK}]"]
    assert not any("href" in t or "<b>" in t for t in templates(option))
    episode, firing, resolved = option["series"]
    assert episode["data"] == [["2026-11-20T11:30:00Z", f"failed_payments [{LINK}]"],
                               ["2026-11-20T11:50:00Z", f"failed_payments [{LINK}]"]]
    assert firing["name"] == "firing" and firing["data"][0][2] == "<b>12</b>"  # a value: escaped by ECharts
    assert resolved["tooltip"]["formatter"] == "{@[1]}: {@[3]} → resolved (value {@[2]})"


def test_names_titles_and_currency_affixes_never_reach_a_template():
    frame = series_frame([{"bucket": T0, "revenue": 1}, {"bucket": T0 + timedelta(hours=1), "revenue": 2}], "UTC")
    chart = time_chart(frame, [(LINK, "revenue", "#000")], title=f"Revenue {LINK}",
                       y_title=LINK, axis=money_axis("<b>x%d{c}</b>"), line=(150, "target {c} 1.5"))
    assert chart.option["series"][0]["name"] == LINK and chart.option["title"]["text"] == f"Revenue {LINK}"
    assert templates(chart.option) == ["%,.2f BXDCB", "{value} BXDCB", "target (c) 1.5"]


def test_a_currency_that_is_not_text_draws_as_no_currency():
    assert money_axis(5)["label"] == "{value} XXX"
    assert money_axis("usd") == {"format": "$%,.2f", "label": "${value}", "scale": 100}
    assert money_axis("jpy")["format"] == "¥%,.0f"


def test_a_time_chart_draws_a_series_frame_at_local_wall_clock_times_in_a_half_hour_zone():
    # Local midnights in Kolkata (UTC+05:30) are 18:30 UTC the day before.
    rows = [{"bucket": datetime(2026, 11, 19, 18, 30, tzinfo=timezone.utc), "failed": 3},
            {"bucket": datetime(2026, 11, 20, 18, 30, tzinfo=timezone.utc), "failed": 5}]
    option = time_chart(series_frame(rows, "Asia/Kolkata"), [("Failed", "failed", "#000")],
                        title="Failed payments per day", y_title="Payments", axis=COUNT, kind="bar").option
    # The chart runs in UTC and is handed wall-clock times: a browser anywhere draws Kolkata's midnight.
    assert option["useUTC"] is True
    assert option["series"][0]["data"] == [["2026-11-20T00:00:00Z", 3], ["2026-11-21T00:00:00Z", 5]]
    assert option["xAxis"]["name"] == "Time (Asia/Kolkata)"
    assert option["yAxis"]["minInterval"] == 1  # whole payments


def test_a_bucket_without_a_value_is_a_gap_in_the_line_not_a_zero():
    rows = [{"bucket": T0 + timedelta(hours=h), "processing_ms": {"p95": p95, "avg": avg}}
            for h, (p95, avg) in enumerate([(1500.0, 900.0), (None, None), (2500.0, 1200.0)])]
    option = time_chart(series_frame(rows, "UTC"), [("p95", "processing_ms.p95", "#d00"),
                                                    ("average", "processing_ms.avg", "#00d")],
                        title="Processing time per hour", y_title="Seconds", axis=SECONDS,
                        line=(5000, "alert above 5 s")).option
    p95, average = option["series"]
    assert [v for _, v in p95["data"]] == [1.5, None, 2.5]  # milliseconds drawn in seconds
    assert [v for _, v in average["data"]] == [0.9, None, 1.2]
    assert p95["connectNulls"] is False
    assert p95["markLine"]["data"] == [{"yAxis": 5.0}]  # the target in the same unit as the line
    assert option["yAxis"]["max"] == 10  # above the target, which is above every value
    assert option["tooltip"]["valueFormatter"] == "%,.2f s"


def test_money_is_drawn_in_major_units_of_its_currency():
    rows = [{"bucket": T0, "revenue": {"usd": 123456, "jpy": 5000}}]
    frame = series_frame(rows, "UTC")
    dollars = time_chart(frame, [("Revenue", "revenue.usd", "#000")], title="Revenue", y_title="Revenue",
                         axis=money_axis("usd"), kind="bar").option
    yen = time_chart(frame, [("Revenue", "revenue.jpy", "#000")], title="Revenue", y_title="Revenue",
                     axis=money_axis("jpy"), kind="bar").option
    assert dollars["series"][0]["data"][0][1] == 1234.56 and dollars["yAxis"]["axisLabel"]["formatter"] == "${value}"
    assert yen["series"][0]["data"][0][1] == 5000 and yen["tooltip"]["valueFormatter"] == "¥%,.0f"


def test_a_rate_is_drawn_in_percent_on_the_band_that_matters():
    rows = [{"bucket": T0 + timedelta(hours=h), "success_rate": r} for h, r in enumerate([0.995, 0.9725, None])]
    option = time_chart(series_frame(rows, "UTC"), [("Success rate", "success_rate", "#0d0")],
                        title="Success rate per hour", y_title="Success rate", axis=RATE,
                        line=(0.99, "target ≥ 99.0%")).option
    assert [v for _, v in option["series"][0]["data"]] == [99.5, 97.25, None]
    assert option["yAxis"]["max"] == 100 and option["yAxis"]["min"] == 95  # a whole percent: a tick
    assert option["series"][0]["markLine"]["data"] == [{"yAxis": 99.0}]


def test_a_stacked_chart_stacks_its_series():
    rows = [{"bucket": T0, "ok": 6, "failed": 4}, {"bucket": T0 + timedelta(hours=1), "ok": 3, "failed": None}]
    option = time_chart(series_frame(rows, "UTC"), [("Succeeded", "ok", "#0d0"), ("Failed", "failed", "#d00")],
                        title="Payments per hour", y_title="Payments", axis=COUNT, kind="bar", stacked=True).option
    assert [v for _, v in option["series"][1]["data"]] == [4, None]
    assert {s["stack"] for s in option["series"]} == {"total"}
    assert option["legend"]


def test_a_funnel_shows_each_stage_with_its_share_of_the_first():
    option = funnel_chart([("Created", 200), ("Paid", 150), ("Activated", 0)], title="Funnel").option
    assert [d["label"]["formatter"] for d in option["series"][0]["data"]] == [
        "Created: 200 (100%)", "Paid: 150 (75%)", "Activated: 0 (0%)"]


def test_wall_clock_keeps_the_local_reading():
    local = datetime(2026, 11, 1, 1, 30, tzinfo=ZoneInfo("America/New_York"))
    assert wall_clock(local) == "2026-11-01T01:30:00Z"
