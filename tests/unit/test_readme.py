"""The README and docs/ stay true: the configuration page is the settings' own table, the
commands and make targets shown exist, every relative link leads somewhere, the README short."""

from __future__ import annotations

import re
from pathlib import Path

import click
from click.testing import CliRunner

from batchline.cli import main
from batchline.settings import Settings, configuration_block

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = {ROOT / "README.md": README} | {p: p.read_text() for p in DOCS}
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
REGENERATE = ".venv/bin/python -m batchline.settings --write docs/configuration.md"


def test_the_configuration_page_is_generated_from_the_settings() -> None:
    assert configuration_block() in CONFIGURATION, f"out of date: run `{REGENERATE}`"


def test_every_setting_is_documented_and_nothing_else() -> None:
    documented = {m.lower() for m in re.findall(r"`BATCHLINE_([A-Z0-9_]+)` \|", CONFIGURATION)}
    assert documented == set(Settings.model_fields)


def test_the_commands_the_docs_show_exist() -> None:
    shown: set[tuple[str, str]] = set()
    for text in PAGES.values():
        shown |= set(re.findall(r"^batchline (\w+) ?([\w-]*)", text, flags=re.MULTILINE))
    assert {"submit", "status", "results", "cancel", "jobs", "events", "doctor"} <= {
        c for c, _ in shown
    }
    for command, sub in sorted(shown):
        args = [command, "--help"]
        if isinstance(main.commands.get(command), click.Group) and sub:
            args = [command, sub, "--help"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, (args, result.output)


def test_the_make_targets_the_docs_show_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = {t for text in PAGES.values() for t in re.findall(r"^make (\w+)", text, re.M)}
    assert {"demo", "test"} <= targets
    for target in targets:
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), target


def _anchors(text: str) -> set[str]:
    """GitHub's anchors for a page's headings."""
    out = set()
    for heading in re.findall(r"^#+ (.+)$", _prose(text), flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def _prose(text: str) -> str:
    """The page without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def test_every_relative_link_leads_to_a_file_and_its_heading() -> None:
    for page, text in PAGES.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(text)):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.exists(), (page.name, target)
            if anchor:
                assert anchor in _anchors(dest.read_text()), (page.name, target)


def test_the_readme_is_short_and_points_to_every_page_and_example() -> None:
    assert len(README.splitlines()) <= 260
    for page in DOCS:
        assert f"(docs/{page.name})" in README, page.name
    examples = sorted((ROOT / "docs" / "examples").glob("*.py"))
    assert examples
    guide = (ROOT / "docs" / "guide.md").read_text()
    for example in examples:
        assert f"(examples/{example.name})" in guide, example.name


def test_the_quick_start_shows_a_table_with_a_template() -> None:
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    for shown in ("make demo", "make test", "docker compose up", ".csv", "--template"):
        assert shown in quick, shown
