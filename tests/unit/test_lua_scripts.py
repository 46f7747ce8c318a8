"""Every Lua script is a file in batchline/lua/, declared once with the names of its keys and
arguments, and shipped with the package."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from batchline import durability, events, lease, scripts
from batchline.webhooks import dispatch
from batchline.webhooks import scripts as webhook_scripts

ROOT = Path(__file__).resolve().parents[2]
LUA = ROOT / "batchline" / "lua"


def declared() -> list[scripts.Script[Any, Any]]:
    found: list[scripts.Script[Any, Any]] = []
    for module in (scripts, webhook_scripts, lease, durability, events, dispatch):
        found += [v for v in vars(module).values() if isinstance(v, scripts.Script)]
    return list({s.name: s for s in found}.values())


def test_every_lua_file_is_declared_and_loads():
    names = {s.name for s in declared()}
    preludes = {s.prelude for s in declared() if s.prelude}
    files = {p.stem for p in LUA.glob("*.lua")}
    assert files == names | preludes
    for s in declared():
        assert "redis.call" in s.source
        assert s.keys._fields, s.name  # every script names at least one key


def test_the_lua_files_ship_with_the_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "lua/*.lua" in project["tool"]["setuptools"]["package-data"]["batchline"]


def test_optional_trailing_keys_and_arguments_are_left_out():
    assert scripts._present(("a", None)) == ["a"]
    assert scripts._present(events.EmitArgs(b"{}", 1, 1, "g", 1, 1)) == [b"{}", 1, 1, "g", 1, 1]
