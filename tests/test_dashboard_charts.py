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

from dashboard.charts import money_axis, time_chart
from dashboard.views.alerts import timeline
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
    rows = [{"bucket": T0}, {"bucket": T0 + timedelta(hours=1)}]
    fig = time_chart(rows, ZoneInfo("UTC"), [(LINK, [1, 2], "#000")], title=f"Revenue {LINK}",
                     y_title=LINK, axis=money_axis("<b>x</b>"), line=(1.5, LINK))
    text = drawn_text(fig)
    assert "<a href" not in text and "<b>" not in text


def test_a_currency_that_is_not_text_draws_as_no_currency():
    assert money_axis(5)["ticksuffix"] == " XXX"
