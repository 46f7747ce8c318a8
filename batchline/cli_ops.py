"""`batchline doctor` and `batchline metrics`: operating a Batchline fleet."""

from __future__ import annotations

import click


@click.command()
def doctor() -> None:
    """Check Redis, the workers and the API (or the emulator), and say what is wrong."""
    raise click.ClickException("not available yet")
