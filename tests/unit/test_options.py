"""A job's options are defined once (batchline.options.JobOptions): the task's keywords, the
client's submit, the command line's submit and the README's message contract all follow it."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from batchline.options import TABLE_OPTIONS, JobOptions
from batchline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
FIELDS = set(JobOptions.names())
# Keywords of the task besides the options: the input (one of three) and the idempotency key.
TASK_EXTRAS = {"requests", "source", "upload", "job_id"}
# `upload` is the client's own way in (an upload id); services send requests or a source.
README_EXTRAS = TASK_EXTRAS - {"upload"}
# `batchline submit` parameters that are not job options: the file, the id, how to wait and
# show the answer.
CLI_EXTRAS = {"file", "job_id", "fresh", "wait", "as_json", "timeout_s"}


def _task_keywords() -> set[str]:
    from tasks.submit import submit_job

    params = inspect.signature(submit_job.run).parameters
    return {n for n, p in params.items() if n != "self" and p.kind is not p.VAR_KEYWORD}


def _client_keywords(method: str) -> set[str]:
    from batchline.client import Client

    params = inspect.signature(getattr(Client, method)).parameters
    return {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY} - {"timeout_s", "fresh"}


def _cli_params() -> set[str]:
    from batchline.cli.main import submit

    return {p.name for p in submit.params if p.name is not None}


def _readme_kwargs() -> set[str]:
    rows = [
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("| `batchline.submit_job` |")
    ]
    assert len(rows) == 1, "README.md's message contract has one batchline.submit_job row"
    kwargs = rows[0].split("|")[2]
    assert kwargs.strip().startswith("kwargs:")
    # The names are the backticked words outside parentheses (which explain them).
    top = re.sub(r"\([^()]*\)", "", kwargs)
    return set(re.findall(r"`([a-z_]+)`", top))


def test_the_task_accepts_exactly_the_options() -> None:
    assert _task_keywords() == FIELDS | TASK_EXTRAS


def test_the_clients_submits_take_exactly_the_options() -> None:
    assert _client_keywords("submit") == FIELDS | {"job_id"}
    assert _client_keywords("submit_source") == FIELDS | {"job_id"}


def test_the_command_lines_submit_offers_the_options_it_names() -> None:
    fields = dataclasses.fields(JobOptions)
    mapped = {name for f in fields for name in f.metadata["cli"]}
    assert _cli_params() - CLI_EXTRAS == mapped
    # What the command line does not offer is said in the model (a service can send it).
    assert {f.name for f in fields if not f.metadata["cli"]} == {"result_events", "cache_scope"}


def test_the_readme_lists_exactly_the_tasks_keywords() -> None:
    assert _readme_kwargs() == FIELDS | README_EXTRAS


def test_defaults_as_the_task_and_the_client_assume_them() -> None:
    from batchline.client import JOB_OPTION_DEFAULTS

    assert JobOptions.given_defaults() == JOB_OPTION_DEFAULTS
    assert JOB_OPTION_DEFAULTS["max_attempts"] is None  # the workers' setting, when resolved
    assert TABLE_OPTIONS == ("format", "template", "system_template", "id_column")


def test_an_unknown_keyword_is_refused_naming_it() -> None:
    with pytest.raises(TypeError, match=r"submit_job\(\) got an unexpected keyword argument 'x'"):
        JobOptions.given("submit_job", {"defaults": {}, "x": 1})


def test_resolved_applies_the_workers_defaults_once() -> None:
    settings = Settings(default_model="claude-haiku-4-5", default_max_tokens=64, max_attempts=5)
    opts = JobOptions.given("submit_job", {"defaults": {"max_tokens": 10}}).resolved(settings)
    assert opts.defaults == {"model": "claude-haiku-4-5", "max_tokens": 10}
    assert opts.max_attempts == 5
    assert opts.resolved(settings) == opts
    assert JobOptions(max_attempts=2).resolved(settings).max_attempts == 2


def test_the_fingerprint_keeps_its_form() -> None:
    """Stored jobs' fingerprints must not change: the same fields, in the same order."""
    opts = JobOptions(defaults={"model": "m"}, max_attempts=3, hook_queue="q", format="csv")
    assert opts.canonical() == (
        b'{"defaults":{"model":"m"},"on_result":null,"on_complete":null,"max_attempts":3,'
        b'"metadata":null,"accept_invalid":false,"max_cost_usd":null,"cache":false,'
        b'"cache_scope":"global","format":"csv"}'
    )
