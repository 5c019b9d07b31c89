"""System health as the database reports it: connections and storage.

A read-only user may lack ``serverStatus`` (it needs ``clusterMonitor``); then
that figure is ``None`` with the reason, never 0.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from metrics.embedded import EmbeddedMongo
from metrics.db import DataSourceUnavailable, Source
from metrics.settings import Settings


def embedded_storage_path(settings: Settings) -> Path | None:
    """Where the embedded server keeps its files (``EmbeddedMongo`` uses ``PAYWATCH_HOME/db``); ``None`` otherwise."""
    return EmbeddedMongo(settings.home).storage_dir if settings.embedded else None


def database_health(src: Source, embedded: bool, storage_path: Path | None = None) -> dict:
    """Connections and storage now.

    ``storage_path`` (the embedded server's directory, see
    :func:`embedded_storage_path`) is measured on disk instead of asking
    ``dbStats``: SecantusDB computes ``dbStats`` by encoding every document,
    about 10 s for 90 days of demo data, while the files are what "disk usage"
    means anyway.
    """
    out: dict = {"embedded_database": embedded, "connections": None, "storage": None}
    try:
        status = src.db.client.admin.command("serverStatus", maxTimeMS=src.max_time_ms)
        conns = status.get("connections", {})
        available = conns.get("available")
        if embedded and available == 0:
            available = None  # SecantusDB has no connection limit and reports 0, which MongoDB means as "full"
        out["connections"] = {"current": conns.get("current"), "available": available}
        out["server_version"] = status.get("version")
    except Exception as exc:  # noqa: BLE001 - permission or server errors are reported, not raised
        out["connections_error"] = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if storage_path is not None:
        try:
            out["storage"] = _directory_storage(storage_path)
        except OSError as exc:
            out["storage_error"] = f"{storage_path}: {exc.strerror or exc}"
        return out
    try:
        stats = src.command("dbStats")
        out["storage"] = {
            "data_bytes": _int_or_none(stats.get("dataSize")),
            "storage_bytes": _int_or_none(stats.get("storageSize")),
            "index_bytes": _int_or_none(stats.get("indexSize")),
            "objects": _int_or_none(stats.get("objects")),
            "fs_used_bytes": _int_or_none(stats.get("fsUsedSize")),
            "fs_total_bytes": _int_or_none(stats.get("fsTotalSize")),
        }
    except DataSourceUnavailable as exc:
        out["storage_error"] = str(exc)
    return out


def _int_or_none(value) -> int | None:
    # A figure the server does not report is unknown, not 0.
    return None if value is None else int(value)


def _directory_storage(path: Path) -> dict:
    """Bytes of the files under ``path`` and of the file system holding it."""
    total = 0
    for root, _dirs, files in os.walk(path, onerror=_raise):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # the server rotated a file while we walked
                continue
    disk = shutil.disk_usage(path)
    return {"data_bytes": None, "storage_bytes": total, "index_bytes": None, "objects": None,
            "fs_used_bytes": disk.used, "fs_total_bytes": disk.total}


def _raise(error: OSError) -> None:
    raise error


# Server statistics (dbStats reads the whole database on some servers): the dashboard keeps them on its slow cache.
database_health.expensive = True
