"""The framework's floor for the Chromium step of ``python -m bench rollups``: a Streamlit page with a
heading and ``?charts=N`` Plotly charts of 96 points (a day of 15-minute buckets), and nothing of
Paywatch.  What one of our pages takes in a new tab beyond this page is ours to cut."""

import plotly.graph_objects as go
import streamlit as st

st.header("Floor", anchor=False)
x = list(range(96))
for i in range(int(st.query_params.get("charts", "0"))):
    fig = go.Figure()
    fig.add_scatter(x=x, y=[(i * 7 + j * 13) % 50 for j in x], mode="lines")
    fig.update_layout(height=320)
    st.plotly_chart(fig, key=f"chart{i}")
