"""Helpers for the browser tests: a ``streamlit run`` child process and headless Chromium.

Chromium is Debian's package (``/usr/bin/chromium``, ``make browser``
installs it); ``playwright install`` cannot download browsers here.
"""
