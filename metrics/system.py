"""System health as the database reports it: connections and storage.

A read-only user may lack ``serverStatus`` (it needs ``clusterMonitor``); then
that figure is ``None`` with the reason, never 0.
"""

from __future__ import annotations

from metrics.db import DataSourceUnavailable, Source


def database_health(src: Source, embedded: bool) -> dict:
    out: dict = {"embedded_database": embedded, "connections": None, "storage": None}
    try:
        status = src.db.client.admin.command("serverStatus", maxTimeMS=src.max_time_ms)
        conns = status.get("connections", {})
        out["connections"] = {"current": conns.get("current"), "available": conns.get("available")}
        out["server_version"] = status.get("version")
    except Exception as exc:  # noqa: BLE001 - permission or server errors are reported, not raised
        out["connections_error"] = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    try:
        stats = src.command("dbStats")
        out["storage"] = {
            "data_bytes": int(stats.get("dataSize", 0)),
            "storage_bytes": int(stats.get("storageSize", 0)),
            "index_bytes": int(stats.get("indexSize", 0)),
            "objects": int(stats.get("objects", 0)),
            "fs_used_bytes": int(stats["fsUsedSize"]) if "fsUsedSize" in stats else None,
            "fs_total_bytes": int(stats["fsTotalSize"]) if "fsTotalSize" in stats else None,
        }
    except DataSourceUnavailable as exc:
        out["storage_error"] = str(exc)
    return out
