"""System Health: the platform's API as a probe sees it, the database, and Paywatch's own worker."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import streamlit as st

from dashboard import charts, common
from dashboard.common import Tile, View, dig, md
from dashboard.tiles import metric_tile
from metrics import format as fmt
from metrics.catalogue import rate
from metrics.db import state_db
from metrics.probe import probe_once, probe_summary, record_probe
from metrics.quality import data_quality
from metrics.system import database_health, embedded_storage_path
from metrics.windows import Window


def _now() -> datetime:
    """This second's end: a probe taken a moment ago is before it."""
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)


def main() -> None:
    common.live(render)


def render() -> None:
    with View("System Health") as view:
        if view.settings.embedded:
            st.info("The embedded database is in use: demo and trial data on this machine. "
                    "Set MONGODB_URI to monitor the platform's real database.", icon=":material/database:")
        render_probe(view)
        render_database(view)
        render_worker(view)
        render_quality(view)


def render_probe(view: View) -> None:
    st.subheader("Platform API", anchor=False, divider="gray")
    url = view.settings.health_url
    if not url:
        st.info("No health URL is configured, so API latency and error rate are not measured. "
                "Set PAYWATCH_HEALTH_URL to the platform's health endpoint.", icon=":material/link_off:")
        return
    st.caption(f"Probing {md(url)}: the alert worker asks it every "
               f"{view.settings.eval_interval:g} s while it runs; Probe now asks once from here.")
    if st.button("Probe now", icon=":material/network_check:"):
        result = probe_once(url)
        try:
            record_probe(state_db(view.settings), result)
        except Exception as exc:  # noqa: BLE001 - the result is still worth showing
            st.warning(f"Probe result not recorded: {md(str(exc).splitlines()[0][:200])}")
        common.clear_state_cache()
        outcome = (f"answered HTTP {result.status} in {fmt.duration(result.latency_ms)}" if result.ok
                   else f"failed: {md(result.error)}")
        (st.success if result.ok else st.error)(f"Probe {outcome}.")
    # Live, the window runs to this second: a probe just taken belongs in it.
    window = view.window if view.range.frozen else Window(view.window.start, max(view.window.end, _now()))
    summary = view.state(probe_summary, window)
    if summary is None:
        st.warning("Probe results could not be read from Paywatch's database.")
        return
    if not summary["samples"]:
        st.caption("No probe results in this range yet.")
        return
    last = summary["last"] or {}
    view.tiles([
        metric_tile("api_latency_ms", fmt.duration(dig(summary, "latency_ms", "avg")),
                    note=f"p95 {fmt.duration(dig(summary, 'latency_ms', 'p95'))}"),
        metric_tile("api_error_rate", fmt.rate(summary["error_rate"], 2), note=fmt.count(summary['samples'], 'probe')),
        metric_tile("memory_pct", None if summary["memory_pct"] is None else f"{summary['memory_pct']:.1f}%",
                    note=None if summary["memory_pct"] is not None else "not reported by the health endpoint"),
        Tile("Last probe", view.ago(last.get("at")),
             note=("ok" if last.get("ok") else f"failed: {last.get('error')}") if last else None),
    ])


def render_database(view: View) -> None:
    st.subheader("Database", anchor=False, divider="gray")
    health = view.get(database_health, view.settings.embedded, embedded_storage_path(view.settings),
                      slow=True, tells_health=False)
    if health is None:
        st.caption("Not available.")
        return
    connections = health.get("connections") or {}
    storage = health.get("storage") or {}
    fs_total = storage.get("fs_total_bytes")
    disk = rate("disk_usage", fs_used_bytes=storage.get("fs_used_bytes") or 0, fs_total_bytes=fs_total or 0)
    view.tiles([
        metric_tile("db_connections", fmt.count(connections.get("current")) if connections else None,
                    note=(f"{fmt.count(connections.get('available'))} more available" if connections
                          else "serverStatus not permitted: " + str(health.get("connections_error")))),
        metric_tile("db_storage_bytes", fmt.size(storage.get("storage_bytes")) if storage else None,
                    note=f"data {fmt.size(storage.get('data_bytes'))} · indexes {fmt.size(storage.get('index_bytes'))}"
                    if storage else str(health.get("storage_error"))),
        metric_tile("disk_usage", fmt.rate(disk) if disk is not None else None,
                    note=f"{fmt.size(storage.get('fs_used_bytes'))} of {fmt.size(fs_total)}" if fs_total
                    else "not reported by this server"),
        metric_tile("db_documents", fmt.count(storage.get("objects")) if storage else None,
                    note=f"server {health.get('server_version') or 'version unknown'}"),
    ])
    st.caption(f"Server statistics are read every {common.SLOW_TTL_S // 60} minutes.")


def render_worker(view: View) -> None:
    st.subheader("Alert worker", anchor=False, divider="gray")
    worker = view.worker()
    if worker.at is None:
        st.info("No heartbeat from the alert worker yet: it is not running, or has not started "
                "(python -m alerts run; make run starts it).", icon=":material/heart_broken:")
        return
    if worker.late:
        st.warning(f"The alert worker is late: its last heartbeat is {worker.age_text} old ({view.when(worker.at)}), "
                   f"older than {worker.limit_text}. Alerts may not be evaluated.", icon=":material/heart_broken:")
    else:
        st.success(f"The alert worker is running: last heartbeat {worker.age_text} ago ({view.when(worker.at)}).",
                   icon=":material/favorite:")


def render_quality(view: View) -> None:
    st.subheader("Data quality", anchor=False, divider="gray")
    quality = view.get(data_quality, slow=True)
    if quality is None:
        st.caption("Not available.")
        return
    charts.table(pd.DataFrame({"Collection": list(quality), "Invalid documents": [c["invalid"] for c in quality.values()]}))
    st.caption("A document is invalid when its time, status or amount is missing or of the wrong type; "
               "it is left out of every figure (docs/metrics.md).")


if __name__ == "__main__":
    main()
