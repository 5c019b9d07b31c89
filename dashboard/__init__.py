"""The Streamlit dashboard: ``streamlit run dashboard/app.py`` (``make run`` starts it)."""
