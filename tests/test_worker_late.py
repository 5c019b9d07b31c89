"""One definition of "the alert worker is late", used by every page that shows the worker.

The limit comes from the heartbeat settings: the ``late_after_s`` the worker
recorded in its heartbeat, else ``[alerts] heartbeat_late``, else three
evaluation intervals; the age is measured from the present (or the ``?at=``
instant of a frozen page), never from a cached one.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from streamlit.testing.v1 import AppTest

from test_dashboard import APP, TIMEOUT_S, texts


@pytest.fixture(autouse=True)
def _fresh(fresh_streamlit):
    """Empty caches and re-read settings before and after each test (tests/conftest.py)."""


def beat(state, age_s: float, **fields) -> None:
    state["heartbeats"].replace_one(
        {"_id": "worker"},
        {"_id": "worker", "at": datetime.now(timezone.utc) - timedelta(seconds=age_s), "host": "worker-1",
         "pid": 42, "channels": ["console"], **fields},
        upsert=True)


def what_each_page_says() -> dict[str, str]:
    out = {}
    for page in ("overview", "system_health", "alerts"):
        at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
        at.run()
        if page != "overview":
            at.switch_page(f"views/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        if page == "overview":
            out[page] = next(m.value for m in at.metric if m.label == "Alert worker")
        else:
            warned = "late" in texts(at.warning)
            running = "is running" in texts(at.success)
            assert warned != running, page
            out[page] = "late" if warned else "running"
    return out


def test_a_worker_past_its_recorded_limit_is_late_on_every_page(env, mongo_client, db_names):
    beat(mongo_client[db_names[1]], 100, late_after_s=90.0)  # 3 x 60 s would still call it running
    assert what_each_page_says() == {"overview": "late", "system_health": "late", "alerts": "late"}


def test_heartbeat_late_from_paywatch_toml_applies_to_every_page(env, mongo_client, db_names, tmp_path):
    config = tmp_path / "paywatch.toml"
    config.write_text('[alerts]\nheartbeat_late = "90s"\n')
    env.setenv("PAYWATCH_CONFIG", str(config))
    beat(mongo_client[db_names[1]], 100)
    assert what_each_page_says() == {"overview": "late", "system_health": "late", "alerts": "late"}


def test_a_fresh_heartbeat_is_running_on_every_page(env, mongo_client, db_names):
    beat(mongo_client[db_names[1]], 5, late_after_s=90.0)
    assert what_each_page_says() == {"overview": "running", "system_health": "running", "alerts": "running"}
