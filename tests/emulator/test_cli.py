"""`batchline emulator`: every flag documented, settable by environment, and validated."""

from __future__ import annotations

import re

import anthropic
import pytest
from click.testing import CliRunner

from batchline.cli import main
from tests.emulator.conftest import admin, req, sdk

FLAGS = {
    "--host": None,
    "--port": None,
    "--api-keys": "api_keys",
    "--workspaces": "workspaces",
    "--processing-seconds": "processing_seconds",
    "--canceling-seconds": "canceling_seconds",
    "--rpm-limit": "rpm_limit",
    "--queue-limit": "queue_limit",
    "--error-rate": "error_rate",
    "--error-statuses": "error_statuses",
    "--latency-ms": "latency_ms",
    "--drop-rate": "drop_rate",
    "--lost-create-rate": "lost_create_rate",
    "--error-after-create-rate": "error_after_create_rate",
    "--transient-404": "transient_404",
    "--seed": "seed",
    "--max-requests": "max_requests",
    "--max-body-bytes": "max_body_bytes",
    "--results-order": "results_order",
    "--results-block-lines": "results_block_lines",
    "--results-lines-per-s": "results_lines_per_s",
    "--results-base-url": "results_base_url",
    "--expiry-seconds": "expiry_seconds",
    "--clock-offset-s": "clock_offset_s",
}

# Config keys with no flag: one-shot faults and lists of batch ids, cleared by a reset.
RUNTIME_ONLY = {
    "lost_create_next",
    "fail_next",
    "truncate_results_next",
    "unknown_results_next",
    "stall_next_create",
    "hidden_batches",
}


def test_help_documents_every_flag_and_its_environment_variable() -> None:
    result = CliRunner().invoke(main, ["emulator", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = re.sub(r"\s+", " ", result.output)
    for flag in FLAGS:
        assert f"{flag} " in text, flag
        variable = "BATCHLINE_EMULATOR_" + flag.removeprefix("--").replace("-", "_").upper()
        assert variable in text, variable
    for key in RUNTIME_ONLY:
        assert key in text, key


def test_every_config_key_is_a_flag(emu) -> None:
    assert set(admin(emu, "GET", "config")) - RUNTIME_ONLY == {key for key in FLAGS.values() if key}


@pytest.mark.parametrize(
    "args",
    [
        ["--error-rate", "1.5"],
        ["--error-statuses", "200"],
        ["--rpm-limit", "-2"],
        ["--max-requests", "0"],
        ["--processing-seconds", "soon"],
        ["--workspaces", "no-keys-here"],
        ["--workspaces", "a=k1;b=k1"],
        ["--results-order", "sorted"],
        ["--results-base-url", "api.anthropic.com"],
        ["--expiry-seconds", "0"],
        ["--clock-offset-s", "nan"],
        ["--error-after-create-rate", "2"],
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


def test_world_flags_are_read_from_the_environment_and_the_command_line(emulator_factory) -> None:
    emu = emulator_factory(
        "--results-order",
        "request",
        "--clock-offset-s",
        "-30",
        BATCHLINE_EMULATOR_WORKSPACES="prod=k1,k2;staging=k3",
        BATCHLINE_EMULATOR_RESULTS_BASE_URL="https://api.anthropic.com/",
        BATCHLINE_EMULATOR_EXPIRY_SECONDS="60",
        BATCHLINE_EMULATOR_ERROR_AFTER_CREATE_RATE="0.25",
    )
    config = admin(emu, "GET", "config")
    assert config["workspaces"] == {"prod": ["k1", "k2"], "staging": ["k3"]}
    assert config["results_order"] == "request"
    assert config["results_base_url"] == "https://api.anthropic.com"
    assert config["expiry_seconds"] == 60
    assert config["clock_offset_s"] == -30
    assert config["error_after_create_rate"] == 0.25
    with sdk(emu, api_key="k2") as client:
        assert client.messages.batches.list().data == []
    with sdk(emu) as client, pytest.raises(anthropic.AuthenticationError):
        client.messages.batches.list()
