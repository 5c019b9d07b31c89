"""The shape of the code (how it should read): peers joined by small interfaces, no cycles.

Notification channels, the outbox and its pacing are one layer (``notify``) that alerts and
reports both use; no two packages import each other, and no module reaches into another
object's private attributes.  Read from the source, so a late import inside a function counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("metrics", "notify", "alerts", "reports", "dashboard")


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def package_imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in PACKAGES}
    for name in PACKAGES:
        for path in (ROOT / name).rglob("*.py"):
            graph[name] |= {m.split(".")[0] for m in imports(path)} & set(PACKAGES) - {name}
    return graph


def test_no_two_packages_import_each_other():
    graph = package_imports()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    cycles = sorted(name for name in PACKAGES if reaches(name, name, set()))
    assert cycles == [], f"import cycle through {cycles}: {graph}"


def test_the_delivery_layer_knows_nothing_of_its_users():
    assert package_imports()["notify"] <= {"metrics"}


def test_reports_post_through_the_delivery_layer_not_through_alerts():
    used = set().union(*(imports(p) for p in (ROOT / "reports").rglob("*.py")))
    assert not {m for m in used if m.startswith(("alerts.channels", "alerts.outbox"))}
    assert any(m.startswith("notify") for m in used)


def test_the_jobs_and_the_worker_do_not_import_each_other():
    assert not {m for m in imports(ROOT / "alerts" / "jobs.py") if m.startswith("alerts.worker")}


def test_no_module_sets_another_objects_private_attributes():
    offenders = []
    for name in PACKAGES:
        for path in (ROOT / name).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                targets = node.targets if isinstance(node, ast.Assign) else \
                    [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
                for target in targets:
                    if isinstance(target, ast.Attribute) and target.attr.startswith("_") \
                            and not target.attr.startswith("__") \
                            and not (isinstance(target.value, ast.Name) and target.value.id in ("self", "cls")):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} sets .{target.attr}")
    assert offenders == []


def test_the_metrics_command_loads_the_stripe_sdk_only_for_reconcile():
    """``python -m metrics snapshot`` imported the Stripe SDK (and aiohttp with it) for two constants:
    a quarter of a second of every snapshot's 1.5 s budget. Only ``reconcile`` needs it."""
    import subprocess
    import sys
    loaded = subprocess.run([sys.executable, "-c", "import sys, metrics.__main__, metrics.snapshot, metrics.rollups; "
                             "print(sorted({'stripe', 'aiohttp'} & set(sys.modules)))"],
                            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
