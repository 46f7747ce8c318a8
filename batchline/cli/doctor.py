"""`batchline doctor`: runs the checks of batchline.ops.doctor and shows what is wrong."""

from __future__ import annotations

import sys

import click
import orjson

STATUS_STYLE = {
    "ok": ("OK", "green"),
    "warn": ("WARN", "yellow"),
    "fail": ("FAIL", "red"),
    "skip": ("SKIP", "bright_black"),
}


@click.command()
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.1),
    default=1.5,
    show_default=True,
    help="Seconds to wait for workers to answer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(timeout_s: float, as_json: bool) -> None:
    """Check Redis, the workers and the API (or the emulator), and say what is wrong.

    Checks run with this shell's environment (BATCHLINE_*, ANTHROPIC_API_KEY,
    ANTHROPIC_BASE_URL): run it where the workers run, e.g. `docker compose exec worker
    batchline doctor`. Exit code 1 when a check fails.
    """
    from batchline.ops import doctor as checks
    from batchline.settings import reload_settings

    found = checks.run(reload_settings, timeout_s=timeout_s)
    failed = any(c.failed for c in found)
    if as_json:
        out = {"ok": not failed, "checks": [c.as_dict() for c in found]}
        click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        width = max(len(c.name) for c in found)
        for c in found:
            label, color = STATUS_STYLE[c.status]
            line = (
                f"{click.style(f'{label:<4}', fg=color, bold=True)}  {c.name:<{width}}  {c.detail}"
            )
            if c.hint:
                line += f" -- {c.hint}"
            click.echo(line)
    sys.exit(1 if failed else 0)
