"""`batchline emulator`: every flag documented, settable by environment, and validated."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from batchline.cli import main
from tests.emulator.conftest import admin, req, sdk

FLAGS = {
    "--host": None,
    "--port": None,
    "--api-keys": "api_keys",
    "--processing-seconds": "processing_seconds",
    "--canceling-seconds": "canceling_seconds",
    "--rpm-limit": "rpm_limit",
    "--queue-limit": "queue_limit",
    "--error-rate": "error_rate",
    "--error-statuses": "error_statuses",
    "--latency-ms": "latency_ms",
    "--drop-rate": "drop_rate",
    "--lost-create-rate": "lost_create_rate",
    "--transient-404": "transient_404",
    "--seed": "seed",
    "--max-requests": "max_requests",
    "--max-body-bytes": "max_body_bytes",
}


def test_help_documents_every_flag_and_its_environment_variable() -> None:
    result = CliRunner().invoke(main, ["emulator", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = re.sub(r"\s+", " ", result.output)
    for flag in FLAGS:
        assert f"{flag} " in text, flag
        variable = "BATCHLINE_EMULATOR_" + flag.removeprefix("--").replace("-", "_").upper()
        assert variable in text, variable


def test_every_config_key_is_a_flag(emu) -> None:
    runtime_only = {
        "lost_create_next",
        "fail_next",
        "truncate_results_next",
        "unknown_results_next",
    }
    assert set(admin(emu, "GET", "config")) - runtime_only == {key for key in FLAGS.values() if key}


@pytest.mark.parametrize(
    "args",
    [
        ["--error-rate", "1.5"],
        ["--error-statuses", "200"],
        ["--rpm-limit", "-2"],
        ["--max-requests", "0"],
        ["--processing-seconds", "soon"],
    ],
)
def test_bad_flag_values_are_usage_errors(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["emulator", "--port", "1", *args])
    assert result.exit_code == 2, result.output


def test_flags_are_read_from_the_environment(emulator_factory) -> None:
    emu = emulator_factory(
        BATCHLINE_EMULATOR_RPM_LIMIT="7",
        BATCHLINE_EMULATOR_API_KEYS="env-key",
        BATCHLINE_EMULATOR_TRANSIENT_404="true",
        BATCHLINE_EMULATOR_ERROR_STATUSES="503",
        BATCHLINE_EMULATOR_PROCESSING_SECONDS="2.5",
    )
    config = admin(emu, "GET", "config")
    assert config["rpm_limit"] == 7
    assert config["api_keys"] == ["env-key"]
    assert config["transient_404"] is True
    assert config["error_statuses"] == [503]
    assert config["processing_seconds"] == 2.5
    with sdk(emu, api_key="env-key") as client:
        assert client.messages.batches.create(requests=[req("a")]).request_counts.processing == 1
