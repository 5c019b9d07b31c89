"""Chart labels are platform data: Plotly draws a subset of HTML in them, so they arrive escaped."""

from dashboard.charts import bar_chart


def test_a_decline_code_holding_a_link_is_drawn_as_text():
    fig = bar_chart(['<a href="https://evil.example">re-login</a>', "card_declined"], [3, 1],
                    title="Failed payments by decline code", value_title="Failed payments")
    labels = list(fig.data[0].y)
    assert labels[0] == '&lt;a href="https://evil.example"&gt;re-login&lt;/a&gt;'
    assert labels[1] == "card_declined"
