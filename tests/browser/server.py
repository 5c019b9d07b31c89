"""The dashboard as a child process for the browser test (shared with the benchmark)."""

from dashboard.process import APP, ROOT, DashboardProcess as StreamlitServer  # noqa: F401
