"""The `batchline` command line (the console script runs `main`)."""

from batchline.cli.main import main

__all__ = ["main"]
