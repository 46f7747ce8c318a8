"""The house's layout: the library stands on its own, and every task name is one of its own.

`batchline/` is the library; `workers/` (the Celery app instance, its signals, the per-process
runtime) and `tasks/` (thin adapters registering each task) are the deployment built on it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from batchline.messaging import ROUTES, Queue, TaskName

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = ("workers", "tasks")


def _imported(tree: ast.AST) -> set[str]:
    """Every module a file imports, at any depth (functions' own imports included)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_library_never_imports_workers_or_tasks() -> None:
    reaching_up = {}
    for path in sorted((ROOT / "batchline").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        bad = sorted(m for m in _imported(tree) if m.split(".")[0] in DEPLOYMENT)
        if bad:
            reaching_up[str(path.relative_to(ROOT))] = bad
    assert not reaching_up, f"library modules importing the deployment: {reaching_up}"


def _registered() -> dict[str, object]:
    from workers.app import TASK_MODULES, app

    for module in TASK_MODULES:
        __import__(module)
    return {name: task for name, task in app.tasks.items() if name.startswith("batchline.")}


def test_every_task_is_named_by_the_enum_and_every_route_names_a_task() -> None:
    registered = set(_registered())
    assert registered == {t.value for t in TaskName}
    assert {t.value for t in ROUTES} == registered, "a route names no task, or a task no route"
    assert set(ROUTES.values()) == set(Queue)


def test_the_worker_app_routes_and_schedules_only_registered_tasks() -> None:
    from workers.app import app

    registered = set(_registered())
    assert set(app.conf.task_routes) == registered
    assert {q.name for q in app.conf.task_queues} == {q.value for q in Queue}
    assert {e["task"] for e in app.conf.beat_schedule.values()} <= registered


def test_task_names_are_written_once() -> None:
    """Outside the enum, library and deployment code names tasks through TaskName (tests may
    keep literals: they check the public contract)."""
    literal = re.compile(r"[\"']batchline\.[a-z_]+[\"']")
    found = {}
    for top in ("batchline", *DEPLOYMENT):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path == ROOT / "batchline" / "messaging" / "names.py":
                continue
            hits = literal.findall(path.read_text())
            if hits:
                found[str(path.relative_to(ROOT))] = hits
    assert not found, f"task names written as literals: {found}"
