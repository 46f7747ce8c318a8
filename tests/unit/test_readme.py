"""The README stays true: every setting is in its configuration table, its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from batchline.cli import main
from batchline.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented_and_nothing_else() -> None:
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = {m.lower() for m in re.findall(r"`BATCHLINE_([A-Z0-9_]+)`", table)}
    assert documented == set(Settings.model_fields)


def test_the_commands_the_readme_shows_exist() -> None:
    shown = set(re.findall(r"^batchline (\w+)", README, flags=re.MULTILINE))
    assert {"submit", "status", "results", "cancel", "jobs", "events", "doctor"} <= shown
    for command in shown:
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0, (command, result.output)
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    for target in re.findall(r"^make (\w+)", README, flags=re.MULTILINE):
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), target
