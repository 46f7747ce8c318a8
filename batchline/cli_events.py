"""`batchline events` and `batchline webhooks`: following a job's events, replaying deliveries."""

from __future__ import annotations

import click


@click.command()
@click.argument("job_id")
@click.option("--follow", is_flag=True, help="Keep printing events as they happen.")
def events(job_id: str, follow: bool) -> None:
    """Print a job's events."""
    raise click.ClickException("not available yet")


@click.group()
def webhooks() -> None:
    """Webhook deliveries: logs, dead letters, replay."""
