"""The `batchline` command line."""

from __future__ import annotations

import click

from batchline.emulator.cli import emulator


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="batchline")
def main() -> None:
    """Run bulk Claude work through the Message Batches API."""


main.add_command(emulator)
