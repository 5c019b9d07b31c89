"""The framework's floor for the Chromium step of ``python -m bench rollups``: a Streamlit page with a
heading and ``?charts=N`` charts of 96 points (a day of 15-minute buckets), and nothing of Paywatch.
The charts are ECharts, as ``dashboard.charts`` draws them; ``&library=plotly`` draws them with Plotly
instead, the library the dashboard used before.  What one of our pages takes in a new tab beyond this
page is ours to cut."""

import streamlit as st

st.header("Floor", anchor=False)
x = list(range(96))
plotly = st.query_params.get("library") == "plotly"
for i in range(int(st.query_params.get("charts", "0"))):
    y = [(i * 7 + j * 13) % 50 for j in x]
    if plotly:
        import plotly.graph_objects as go

        fig = go.Figure()
        fig.add_scatter(x=x, y=y, mode="lines")
        fig.update_layout(height=320)
        st.plotly_chart(fig, key=f"chart{i}")
    else:
        st.echarts_chart({"xAxis": {"type": "category", "data": x}, "yAxis": {"type": "value"},
                          "tooltip": {"trigger": "axis"}, "series": [{"type": "line", "data": y}]},
                         height=320, key=f"chart{i}")
