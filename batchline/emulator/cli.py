"""`batchline emulator`: serve the emulated Message Batches API."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", envvar="BATCHLINE_EMULATOR_HOST", show_default=True)
@click.option("--port", default=8765, type=int, envvar="BATCHLINE_EMULATOR_PORT", show_default=True)
def emulator(host: str, port: int) -> None:
    """Serve a local emulator of the Message Batches API."""
    raise click.ClickException("not built yet")
