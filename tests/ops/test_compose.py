"""The compose stack, checked by parsing: no container engine runs where the tests do.

The file is validated against the Compose specification's JSON schema, interpolated the way
compose does it, and its commands are parsed by the very programs that will run them and
compared with the commands the rest of the test suite starts.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from batchline.devstack import (
    PROJECT_ROOT,
    RESULTS_WORKER_ARGS,
    RESULTS_WORKER_ENV,
    Beat,
    Emulator,
    Proc,
    Worker,
    free_port,
    stop_all,
    wait_for,
)
from tests.ops.support import FLOWER_ENTRY, flower_argv, metrics_argv

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
ENTRYPOINT = PROJECT_ROOT / "docker" / "entrypoint.sh"
SCHEMA = Path(__file__).with_name("compose-spec.json")

SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
HA_SERVICES = ("redis-replica", *SENTINELS)
REDIS_IMAGE_SERVICES = {"redis", *HA_SERVICES}
# The `monitoring` profile: images of their own, reading the exporter rather than Redis.
MONITORING_SERVICES = ("prometheus", "grafana")
# The services that run Batchline itself (every one built from the image but the emulator).
BATCHLINE_SERVICES = ("worker", "worker-api", "worker-results", "beat", "flower", "metrics")

SECRET_NAME = re.compile(r"PASSWORD|SECRET|API_KEY|TOKEN|AUTH")
REQUIRED_REF = re.compile(r"^\$\{([A-Z][A-Z0-9_]*):\?[^}]+\}$")
VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
# Values a person is given to fill in (an example file may hold nothing else for a secret).
PLACEHOLDERS = {"", "change-me", "changeme"}


class Unset(Exception):
    """A required variable (${NAME:?message}) is missing: compose refuses to start."""


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation: ${A}, ${A:-d}, ${A-d}, ${A:?err}, ${A?err}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        have = env.get(name)
        # With a colon, empty counts as unset.
        missing = not have if op in (":-", ":?") else have is None
        if op in (":?", "?") and missing:
            raise Unset(f"{name}: {arg}")
        if op in (":-", "-") and missing:
            return arg
        return have or ""

    return VAR.sub(one, value)


def load() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # type: ignore[no-any-return]


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


def resolved() -> dict[str, Any]:
    """The file as compose sees it with .env.example filled in with a password and a login."""
    env = {**env_example(), "REDIS_PASSWORD": "s3cr3tpass", "FLOWER_BASIC_AUTH": "ops:pw"}
    return interpolate(load(), env)  # type: ignore[no-any-return]


def command(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def captured(proc: Any, *args: Any, **kwargs: Any) -> list[str]:
    """The argv the test suite's process class would start (without starting it)."""
    seen: list[list[str]] = []

    class Captured(Exception):
        pass

    def spawn(cmd: list[str], env: dict[str, str] | None = None) -> None:
        seen.append(cmd)
        raise Captured

    p = proc(*args, **kwargs)
    p._spawn = spawn
    with pytest.raises(Captured):
        p.start()
    return [Path(seen[0][0]).name, *seen[0][1:]]


def flags(argv: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in argv if a.startswith("-")}


# --- the file itself ---


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a test dependency")
    schema = json.loads(SCHEMA.read_text())
    # Both as written (with ${...} placeholders) and as compose resolves it.
    validator = jsonschema.Draft7Validator(schema)
    validator.validate(load())
    validator.validate(resolved())


def test_services_and_what_they_run() -> None:
    services = resolved()["services"]
    assert set(services) == {
        "redis",
        "worker",
        "worker-api",
        "worker-results",
        "beat",
        "flower",
        "metrics",
        "emulator",
        *HA_SERVICES,
        *MONITORING_SERVICES,
    }
    # Only the emulator and the `ha` and `monitoring` profiles are optional; everything else
    # starts with a plain `docker compose up`.
    optional = {n: s["profiles"] for n, s in services.items() if s.get("profiles")}
    assert optional == {
        "emulator": ["emulator"],
        **{n: ["ha"] for n in HA_SERVICES},
        **{n: ["monitoring"] for n in MONITORING_SERVICES},
    }
    built = {n for n, s in services.items() if s.get("build")}
    assert built == set(services) - REDIS_IMAGE_SERVICES - set(MONITORING_SERVICES)
    for name in built:
        assert services[name]["image"] == services["worker"]["image"]
    for name in REDIS_IMAGE_SERVICES:
        assert services[name]["image"] == services["redis"]["image"], name


def test_every_long_running_service_has_a_health_check() -> None:
    services = resolved()["services"]
    for name, svc in services.items():
        if name == "beat":
            continue  # beat answers nothing; the sweeper's effect shows in the metrics
        check = svc.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check.get("interval") and check.get("retries"), name
    assert services["redis"]["healthcheck"]["test"] == [
        "CMD-SHELL",
        "redis-cli ping | grep -q PONG",
    ]
    # redis-cli authenticates through REDISCLI_AUTH, never an -a argument.
    assert "REDISCLI_AUTH" in services["redis"]["environment"]
    for name in ("worker", "worker-api", "worker-results"):
        test = services[name]["healthcheck"]["test"][1]
        node = command(services[name])[command(services[name]).index("-n") + 1]
        assert f"inspect ping -d {node.replace('%h', '$HOSTNAME')}" in test, name
    flower_check = " ".join(services["flower"]["healthcheck"]["test"])
    assert "5555/healthcheck" in flower_check
    assert "9808/metrics" in " ".join(services["metrics"]["healthcheck"]["test"])
    assert "8765/_emulator/stats" in " ".join(services["emulator"]["healthcheck"]["test"])


def test_every_service_waits_for_a_healthy_redis() -> None:
    services = resolved()["services"]
    for name, svc in services.items():
        if name in ("redis", "emulator", *MONITORING_SERVICES):
            continue
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name


# --- Redis ---


def test_redis_has_persistence_a_password_and_no_published_port() -> None:
    raw = load()["services"]["redis"]
    svc = resolved()["services"]["redis"]
    assert "ports" not in svc and "network_mode" not in svc
    script = command(svc)[-1]
    assert command(svc)[:2] == ["sh", "-c"]
    assert "redis-server" in script
    # The password comes from the container's environment, not the command line.
    assert '--requirepass "$REDIS_PASSWORD"' in script
    assert '--requirepass "$$REDIS_PASSWORD"' in raw["command"][-1]
    assert REQUIRED_REF.match(raw["environment"]["REDIS_PASSWORD"])
    assert "--appendonly yes" in script
    assert "--maxmemory-policy noeviction" in script
    assert "redis-data:/data" in svc["volumes"]
    assert "redis-data" in resolved()["volumes"]
    # The image's own entry point still drops root before redis-server starts.
    assert "exec docker-entrypoint.sh redis-server" in script


def test_a_missing_password_stops_compose_with_a_message() -> None:
    env = {**env_example(), "FLOWER_BASIC_AUTH": "ops:pw"}
    with pytest.raises(Unset, match=r"REDIS_PASSWORD: set REDIS_PASSWORD in \.env"):
        interpolate(load(), env)
    env = {**env_example(), "REDIS_PASSWORD": "s3cr3tpass"}
    with pytest.raises(Unset, match="FLOWER_BASIC_AUTH"):
        interpolate(load(), env)


def test_services_share_one_redis_url_with_the_password() -> None:
    services = resolved()["services"]
    url = "redis://:s3cr3tpass@redis:6379/0"
    for name in ("worker", "worker-api", "worker-results", "beat", "flower", "metrics"):
        assert services[name]["environment"]["BATCHLINE_REDIS_URL"] == url, name


# --- workers, beat, flower, metrics, emulator: the test suite's own entry points ---


def _celery_parse(sub: str, argv: list[str]) -> dict[str, Any]:
    """Parse argv with celery's own command: an unknown or misspelled option fails here."""
    from celery.bin.base import CLIContext
    from celery.bin.beat import beat
    from celery.bin.worker import worker

    from workers.app import app

    cmd = {"worker": worker, "beat": beat}[sub]
    obj = CLIContext(app=app, no_color=True, workdir=None)
    return dict(cmd.make_context(sub, argv, obj=obj).params)


def test_worker_commands_are_the_test_suites_worker_entry_point(tmp_path: Path) -> None:
    services = resolved()["services"]
    suite = captured(Worker, tmp_path, {}, queues=["api"], name="w1", hostname="host1")
    results_suite = captured(
        Worker, tmp_path, {}, queues=["results"], name="w2", extra=RESULTS_WORKER_ARGS
    )
    assert suite[:4] == ["celery", "-A", "workers", "worker"]
    queues_seen: set[str] = set()
    for name in ("worker", "worker-api", "worker-results"):
        argv = command(services[name])
        expected = results_suite if name == "worker-results" else suite
        assert argv[:4] == expected[:4], name
        assert flags(argv) <= flags(expected), (name, flags(argv) - flags(expected))
        params = _celery_parse("worker", argv[4:])
        assert params["without_mingle"] and params["without_gossip"]
        # A distinct node name per replica: %h is the container's hostname.
        assert params["hostname"].endswith(f"@{os.uname().nodename}"), params["hostname"]
        assert argv[argv.index("-n") + 1].endswith("@%h")
        queues_seen |= set(params["queues"])
        svc = services[name]
        assert "container_name" not in svc and "ports" not in svc, name
    assert queues_seen == {"ingest", "api", "results", "events"}
    assert command(services["worker-api"])[command(services["worker-api"]).index("-Q") + 1] == "api"


def test_results_workers_run_as_the_worker_kill_test_and_the_bench_run_them() -> None:
    svc = resolved()["services"]["worker-results"]
    argv = command(svc)
    params = _celery_parse("worker", argv[4:])
    assert params["queues"] == ["results"]
    # The same pool, prefetch and ack emulation as the worker-kill test's results worker.
    tail = argv[argv.index("--pool") : argv.index("--pool") + len(RESULTS_WORKER_ARGS)]
    assert tuple(tail) == RESULTS_WORKER_ARGS
    assert params["pool"].__module__ == "celery.concurrency.solo"
    assert params["prefetch_multiplier"] == 64
    for key, value in RESULTS_WORKER_ENV.items():
        assert str(svc["environment"][key]) == value
    # Every other worker keeps ack emulation (the setting passes through, default on).
    for name in ("worker", "worker-api"):
        env = resolved()["services"][name]["environment"]
        assert env.get("BATCHLINE_BROKER_ACK_EMULATION") in (None, ""), name


def test_the_general_worker_is_scalable_and_configurable() -> None:
    raw = load()["services"]["worker"]
    argv = [str(a) for a in raw["command"]]
    assert argv[argv.index("-Q") + 1] == "${WORKER_QUEUES:-ingest,events}"
    assert argv[argv.index("--concurrency") + 1] == "${WORKER_CONCURRENCY:-4}"
    env = {
        **env_example(),
        "REDIS_PASSWORD": "x",
        "FLOWER_BASIC_AUTH": "a:b",
        "WORKER_QUEUES": "results",
    }
    svc = interpolate(load(), env)["services"]["worker"]
    assert _celery_parse("worker", command(svc)[4:])["queues"] == ["results"]


def test_beat_is_the_test_suites_beat_and_keeps_its_schedule(tmp_path: Path) -> None:
    svc = resolved()["services"]["beat"]
    suite = captured(Beat, tmp_path, {})
    argv = command(svc)
    assert argv[:4] == suite[:4] == ["celery", "-A", "workers", "beat"]
    assert flags(argv) == flags(suite)
    params = _celery_parse("beat", argv[4:])
    assert params["schedule"] == "/data/celerybeat-schedule"
    assert "beat-data:/data" in svc["volumes"]
    assert "deploy" not in svc  # one instance: the README says never to scale it


def test_flower_runs_with_basic_auth_from_the_environment_and_persistent_state() -> None:
    from flower.options import default_options

    raw = load()["services"]["flower"]
    svc = resolved()["services"]["flower"]
    argv = command(svc)
    assert argv[:4] == ["celery", "-A", "workers", "flower"] == FLOWER_ENTRY
    known = set(default_options._options)  # tornado options Flower defines
    for arg in argv[4:]:
        name = arg.lstrip("-").split("=", 1)[0].replace("_", "-")
        assert name in known, arg
    assert flags(argv) == flags(flower_argv(0, "flower.db"))
    assert "--persistent=True" in argv and "--db=/data/flower.db" in argv
    assert "flower-data:/data" in svc["volumes"]
    # Credentials only through the environment, required, never on the command line.
    assert not any("basic" in a for a in argv)
    assert REQUIRED_REF.match(raw["environment"]["FLOWER_BASIC_AUTH"])
    assert svc["environment"]["FLOWER_BASIC_AUTH"] == "ops:pw"
    # Published on the host's loopback unless FLOWER_BIND says otherwise.
    assert svc["ports"] == ["127.0.0.1:5555:5555"]
    # Flower sees what the workers see: the same broker through the same app.
    assert (
        svc["environment"]["BATCHLINE_REDIS_URL"]
        == (resolved()["services"]["worker"]["environment"]["BATCHLINE_REDIS_URL"])
    )
    assert "ANTHROPIC_API_KEY" not in svc["environment"]


def test_metrics_and_emulator_are_the_batchline_commands_the_tests_run(tmp_path: Path) -> None:
    from batchline.cli import main

    services = resolved()["services"]
    metrics = command(services["metrics"])
    assert metrics[:2] == ["batchline", "metrics"]
    assert flags(metrics) == flags(metrics_argv("127.0.0.1", 0))
    ctx = main.commands["metrics"].make_context("metrics", metrics[2:])
    assert (ctx.params["host"], ctx.params["port"]) == ("0.0.0.0", 9808)
    assert services["metrics"]["ports"] == ["127.0.0.1:9808:9808"]

    emulator = command(services["emulator"])
    suite = captured(Emulator, tmp_path)
    assert emulator[:2] == suite[:2] == ["batchline", "emulator"]
    assert flags(emulator) <= flags(suite)
    ctx = main.commands["emulator"].make_context("emulator", emulator[2:])
    assert (ctx.params["host"], ctx.params["port"]) == ("0.0.0.0", 8765)
    assert "ports" not in services["emulator"]


def test_workers_point_at_the_emulator_when_its_profile_is_on() -> None:
    services = resolved()["services"]
    port = command(services["emulator"])[command(services["emulator"]).index("--port") + 1]
    for name in ("worker", "worker-api"):
        svc = services[name]
        assert svc["environment"]["BATCHLINE_EMULATOR_URL"] == f"http://emulator:{port}"
        # Started after the emulator is healthy when the profile is on, without it otherwise.
        assert svc["depends_on"]["emulator"] == {"condition": "service_healthy", "required": False}
    assert 'ENTRYPOINT ["batchline-entrypoint"]' in DOCKERFILE.read_text()
    assert "COPY docker/entrypoint.sh /usr/local/bin/batchline-entrypoint" in DOCKERFILE.read_text()


def _entrypoint(env: dict[str, str]) -> dict[str, str]:
    base = {"PATH": os.environ["PATH"], **env}
    out = subprocess.run(
        ["sh", str(ENTRYPOINT), "env"], env=base, capture_output=True, text=True, check=True
    )
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def test_entrypoint_uses_the_emulator_only_while_it_resolves() -> None:
    # Given the emulator's name resolves (as it does while the profile runs it)
    on = _entrypoint(
        {"BATCHLINE_EMULATOR_URL": "http://localhost:8765", "ANTHROPIC_API_KEY": "sk-real"}
    )
    # Then the SDK goes there, with the emulator's key rather than a real one
    assert on["ANTHROPIC_BASE_URL"] == "http://localhost:8765"
    assert on["ANTHROPIC_API_KEY"] != "sk-real"
    # Given no emulator (the name does not resolve): the API, with the configured key
    off = _entrypoint(
        {"BATCHLINE_EMULATOR_URL": "http://emulator.invalid:8765", "ANTHROPIC_API_KEY": "sk-real"}
    )
    assert "ANTHROPIC_BASE_URL" not in off and off["ANTHROPIC_API_KEY"] == "sk-real"
    # Given an explicit base URL: it wins
    explicit = _entrypoint(
        {"BATCHLINE_EMULATOR_URL": "http://localhost:8765", "ANTHROPIC_BASE_URL": "http://gw:1"}
    )
    assert explicit["ANTHROPIC_BASE_URL"] == "http://gw:1"


def test_batchline_services_wait_for_the_sentinels_and_can_reach_them() -> None:
    services = resolved()["services"]
    raw = load()["services"]
    sentinel_port = "26379"  # the port each sentinel's config gives it (tested below)
    for name in BATCHLINE_SERVICES:
        env = services[name]["environment"]
        # The sentinels the entry point switches to, each by its service name
        assert env["REDIS_SENTINELS"] == ",".join(f"{s}:{sentinel_port}" for s in SENTINELS)
        # The password to build the URL with, from .env, never written here
        assert env["REDIS_PASSWORD"] == "s3cr3tpass"
        assert REQUIRED_REF.match(raw[name]["environment"]["REDIS_PASSWORD"]), name
        # Started after the sentinels are healthy when the profile is on, without it otherwise
        for sentinel in SENTINELS:
            assert services[name]["depends_on"][sentinel] == {
                "condition": "service_healthy",
                "required": False,
            }, name
        # Durable writes wait for the replica whenever one is connected
        assert env["BATCHLINE_DURABLE_WRITES"] == "auto", name
    assert "REDIS_SENTINELS" not in services["emulator"].get("environment", {})


def test_durable_writes_follow_the_environment() -> None:
    from batchline.settings import Settings

    env = {**env_example(), "REDIS_PASSWORD": "x", "FLOWER_BASIC_AUTH": "a:b"}
    for mode in ("off", "replica"):
        svc = interpolate(load(), {**env, "BATCHLINE_DURABLE_WRITES": mode})["services"]["worker"]
        assert svc["environment"]["BATCHLINE_DURABLE_WRITES"] == mode
    assert Settings(durable_writes=resolved()["x-settings"]["BATCHLINE_DURABLE_WRITES"])


def test_entrypoint_uses_the_sentinels_only_while_they_resolve() -> None:
    from batchline.redisconn import is_sentinel, parse_sentinels

    plain = "redis://:pw1@redis:6379/0"
    # Given the first sentinel's name resolves (as it does while the `ha` profile runs it)
    on = _entrypoint(
        {
            "REDIS_SENTINELS": "localhost:26379,sentinel-2:26379,sentinel-3:26379",
            "REDIS_PASSWORD": "pw1",
            "BATCHLINE_REDIS_URL": plain,
        }
    )
    # Then Redis is reached through the three sentinels, with the servers' password in the
    # URL and the same password for the sentinels themselves
    url = on["BATCHLINE_REDIS_URL"]
    assert url == (
        "sentinel://:pw1@localhost:26379;sentinel://:pw1@sentinel-2:26379;"
        "sentinel://:pw1@sentinel-3:26379/0"
    )
    assert is_sentinel(url)
    hosts, primary = parse_sentinels(url)
    assert hosts == [("localhost", 26379), ("sentinel-2", 26379), ("sentinel-3", 26379)]
    assert primary == {"password": "pw1", "db": 0}
    assert on["BATCHLINE_REDIS_SENTINEL_PASSWORD"] == "pw1"
    # Given no sentinels (the name does not resolve): the configured Redis, as it was
    off = _entrypoint(
        {
            "REDIS_SENTINELS": "sentinel-1.invalid:26379,sentinel-2.invalid:26379",
            "REDIS_PASSWORD": "pw1",
            "BATCHLINE_REDIS_URL": plain,
        }
    )
    assert off["BATCHLINE_REDIS_URL"] == plain
    assert "BATCHLINE_REDIS_SENTINEL_PASSWORD" not in off
    # Given an explicit Sentinel URL, or an explicit sentinels' password: they win
    mine = "sentinel://:pw2@s1:26379;sentinel://:pw2@s2:26379/3"
    explicit = _entrypoint(
        {
            "REDIS_SENTINELS": "localhost:26379",
            "REDIS_PASSWORD": "pw1",
            "BATCHLINE_REDIS_URL": mine,
        }
    )
    assert explicit["BATCHLINE_REDIS_URL"] == mine
    own = _entrypoint(
        {
            "REDIS_SENTINELS": "localhost:26379",
            "REDIS_PASSWORD": "pw1",
            "BATCHLINE_REDIS_URL": plain,
            "BATCHLINE_REDIS_SENTINEL_PASSWORD": "sentinels-own",
        }
    )
    assert own["BATCHLINE_REDIS_URL"].startswith("sentinel://:pw1@localhost:26379")
    assert own["BATCHLINE_REDIS_SENTINEL_PASSWORD"] == "sentinels-own"
    # And without the password (or the list) nothing changes
    bare = _entrypoint({"REDIS_SENTINELS": "localhost:26379", "BATCHLINE_REDIS_URL": plain})
    assert bare["BATCHLINE_REDIS_URL"] == plain


# --- the `ha` profile: a replica and three sentinels ---


def _fake_bin(tmp_path: Path, redis_cli: str) -> Path:
    """A bin directory that stands in for the Redis image: its entry point writes down the argv
    it would run (NUL-separated, in $ARGV_OUT), and redis-cli runs `redis_cli` (shell)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fakes = {
        "docker-entrypoint.sh": 'for a in "$@"; do printf \'%s\\0\' "$a"; done > "$ARGV_OUT"',
        "redis-cli": redis_cli,
    }
    for name, body in fakes.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return bin_dir


def _start_script(
    tmp_path: Path,
    service: str,
    redis_cli: str = "exit 1",
    cwd: Path | None = None,
    **env: str,
) -> list[str]:
    """The argv a Redis-image service's `sh -c` script hands to the image's entry point, run
    with the service's own environment (`env` on top); `redis_cli` answers in place of the
    sentinels (by default none answers, as without the `ha` profile)."""
    svc = resolved()["services"][service]
    argv = command(svc)
    assert argv[:2] == ["sh", "-c"], service
    out = tmp_path / f"{service}.argv"
    bin_dir = _fake_bin(tmp_path, redis_cli)
    full = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "ARGV_OUT": str(out),
        **{k: str(v) for k, v in svc["environment"].items()},
        **env,
    }
    subprocess.run(["sh", "-c", argv[2]], env=full, cwd=cwd or tmp_path, check=True, timeout=30)
    return out.read_text().split("\0")[:-1]


def _health(service: str, port: int) -> bool:
    """Whether a service's health check passes against a local process on `port`."""
    test = resolved()["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL", service
    check = (
        test[1]
        .replace("-p 26379", f"-p {port}")
        .replace("redis-cli info", f"redis-cli -p {port} info")
    )
    assert str(port) in check, service
    env = {"PATH": os.environ["PATH"], "REDISCLI_AUTH": "s3cr3tpass"}
    return subprocess.run(["sh", "-c", check], env=env, timeout=30, check=False).returncode == 0


def _options(argv: list[str]) -> dict[str, list[str]]:
    """redis-server's `--name value...` arguments by name."""
    out: dict[str, list[str]] = {}
    name = ""
    for arg in argv:
        if arg.startswith("--"):
            name = arg[2:]
            out[name] = []
        elif name:
            out[name].append(arg)
    return out


def _sentinel_conf(tmp_path: Path, name: str) -> tuple[list[str], Path]:
    """Run a sentinel service's script in an empty directory (its volume on a first start):
    the argv it runs and the config file it wrote."""
    work = tmp_path / name
    work.mkdir(exist_ok=True)
    argv = _start_script(tmp_path, name, cwd=work)
    return argv, work / "sentinel.conf"


def _directives(conf: Path) -> list[list[str]]:
    return [shlex.split(line) for line in conf.read_text().splitlines() if line.strip()]


def test_ha_services_are_a_replica_and_three_sentinels_of_the_redis_image() -> None:
    services = resolved()["services"]
    for name in HA_SERVICES:
        svc = services[name]
        assert svc["profiles"] == ["ha"], name
        assert "ports" not in svc and "build" not in svc, name
        # Their own data: the replica's append-only file, each sentinel's rewritten config.
        (volume,) = svc["volumes"]
        assert volume == f"{name}-data:/data" and f"{name}-data" in resolved()["volumes"], name
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name
    # The replica starts once the sentinels answer: after a failover they name its role.
    replica = services["redis-replica"]
    for name in SENTINELS:
        assert replica["depends_on"][name] == {"condition": "service_healthy"}
    assert replica["healthcheck"]["test"][0] == "CMD-SHELL"
    assert "info replication" in replica["healthcheck"]["test"][1]
    for name in SENTINELS:
        check = " ".join(services[name]["healthcheck"]["test"])
        assert "-p 26379" in check and "get-master-addr-by-name mymaster" in check, name
        assert services[name]["environment"]["SENTINEL_NAME"] == name


def test_redis_and_its_replica_run_one_start_script(tmp_path: Path) -> None:
    raw = load()["services"]
    services = resolved()["services"]
    assert command(services["redis"])[2] == command(services["redis-replica"])[2]
    assert raw["redis"]["command"][2] == raw["redis-replica"]["command"][2]
    # Given no sentinel answers (the default stack, or a first start)
    primary = _options(_start_script(tmp_path, "redis"))
    replica = _options(_start_script(tmp_path, "redis-replica"))
    # Then `redis` is the primary and `redis-replica` its replica, both announcing their
    # service names, with the password from the environment for clients and for replication
    assert "replicaof" not in primary
    assert replica["replicaof"] == ["redis", "6379"]
    for name, opts in (("redis", primary), ("redis-replica", replica)):
        assert opts["requirepass"] == opts["masterauth"] == ["s3cr3tpass"], name
        assert opts["replica-announce-ip"] == [name]
        assert opts["appendonly"] == ["yes"] and opts["appendfsync"] == ["everysec"], name
        assert opts["maxmemory-policy"] == ["noeviction"], name
    assert '--masterauth "$$REDIS_PASSWORD"' in raw["redis-replica"]["command"][2]


@pytest.mark.parametrize(
    ("answer", "redis_role", "replica_role"),
    [
        # the sentinels name the first primary: as first configured
        ("printf 'redis\\n6379\\n'", None, ["redis", "6379"]),
        # after a failover: the old primary rejoins as a replica of the new one
        ("printf 'redis-replica\\n6379\\n'", ["redis-replica", "6379"], None),
        # an error reply, a nil one, or no sentinel at all: as first configured
        ("echo 'NOAUTH Authentication required.'", None, ["redis", "6379"]),
        ("echo", None, ["redis", "6379"]),
        ("exit 1", None, ["redis", "6379"]),
    ],
)
def test_a_redis_server_starts_as_the_sentinels_say(
    tmp_path: Path, answer: str, redis_role: list[str] | None, replica_role: list[str] | None
) -> None:
    cli = f'case "$*" in *"get-master-addr-by-name mymaster"*) {answer} ;; *) exit 1 ;; esac'
    assert _options(_start_script(tmp_path, "redis", cli)).get("replicaof") == redis_role
    assert _options(_start_script(tmp_path, "redis-replica", cli)).get("replicaof") == replica_role


def test_the_sentinels_config_watches_redis_with_a_quorum_of_two(tmp_path: Path) -> None:
    from batchline.settings import Settings

    raw = load()["services"]
    for name in SENTINELS:
        # Given a sentinel's first start (an empty volume)
        argv, conf = _sentinel_conf(tmp_path, name)
        # Then it runs Sentinel on the file it wrote
        assert argv == ["redis-server", "sentinel.conf", "--sentinel"], name
        d = _directives(conf)
        assert ["port", "26379"] in d
        assert ["sentinel", "resolve-hostnames", "yes"] in d
        assert ["sentinel", "announce-hostnames", "yes"] in d
        assert ["sentinel", "announce-ip", name] in d
        monitors = [x for x in d if x[:2] == ["sentinel", "monitor"]]
        assert monitors == [["sentinel", "monitor", "mymaster", "redis", "6379", "2"]]
        # A majority of the three sentinels: one may be lost, and no two partitions of them
        # can each elect a leader.
        quorum = int(monitors[0][5])
        assert len(SENTINELS) // 2 < quorum < len(SENTINELS)
        down_after = [
            x[3] for x in d if x[:3] == ["sentinel", "down-after-milliseconds", "mymaster"]
        ]
        failover = [x[3] for x in d if x[:3] == ["sentinel", "failover-timeout", "mymaster"]]
        assert 1000 <= int(down_after[0]) <= 30_000 and int(failover[0]) >= 2 * int(down_after[0])
        # The password: the primary's, and the one clients and the other sentinels give
        assert ["sentinel", "auth-pass", "mymaster", "s3cr3tpass"] in d
        assert ["requirepass", "s3cr3tpass"] in d
        assert "s3cr3tpass" not in raw[name]["command"][2]
    # The primary's name is the one Batchline asks the sentinels for by default
    assert Settings.model_fields["redis_sentinel_master"].default == "mymaster"


def test_a_sentinel_keeps_what_it_learned_and_takes_a_new_password(tmp_path: Path) -> None:
    # Given a sentinel that has rewritten its file after a failover
    _, conf = _sentinel_conf(tmp_path, "sentinel-2")
    learned = conf.read_text().replace("mymaster redis 6379", "mymaster redis-replica 6379")
    learned += "user default on #0123abcd ~* &* +@all\nsentinel current-epoch 1\n"
    conf.write_text(learned)
    # When it restarts with another password
    _start_script(tmp_path, "sentinel-2", cwd=conf.parent, REDIS_PASSWORD="n3wpass")
    # Then what it learned stays, and the password is the new one, once
    d = _directives(conf)
    assert ["sentinel", "monitor", "mymaster", "redis-replica", "6379", "2"] in d
    assert ["sentinel", "current-epoch", "1"] in d
    assert [x for x in d if x[0] == "requirepass"] == [["requirepass", "n3wpass"]]
    assert [x for x in d if x[:2] == ["sentinel", "auth-pass"]] == [
        ["sentinel", "auth-pass", "mymaster", "n3wpass"]
    ]
    assert not [x for x in d if x[:2] == ["user", "default"]]


class _Redis(Proc):
    """A redis-server (or Sentinel) run with an argv taken from the compose file."""

    def __init__(self, workdir: Path, argv: list[str]):
        self.workdir = workdir
        self.argv = argv
        self.log = workdir / "stdout.log"

    def start(self) -> _Redis:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is not installed"
        self._spawn([exe, *self.argv])
        return self


def _local_server(argv: list[str], work: Path, port: int, primary_port: int) -> list[str]:
    """A Redis service's argv for this host: service names become 127.0.0.1 and its ports."""
    opts = argv[1:]
    if "--replicaof" in opts:
        at = opts.index("--replicaof")
        opts[at + 1 : at + 3] = ["127.0.0.1", str(primary_port)]
    at = opts.index("--replica-announce-ip")
    opts[at + 1] = "127.0.0.1"
    local = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(work), "--save", ""]
    return [*opts, *local]


def test_the_ha_profile_runs_fails_over_and_batchline_follows(tmp_path: Path) -> None:
    from batchline.durability import Durability
    from batchline.redisconn import connect, parse_sentinels
    from batchline.settings import Settings

    ports = {name: free_port() for name in ("redis", "redis-replica", *SENTINELS)}
    procs: list[Proc] = []
    try:
        # Given the primary and the replica as the compose file starts them
        for name in ("redis", "redis-replica"):
            work = tmp_path / f"{name}-data"
            work.mkdir()
            argv = _start_script(tmp_path, name)
            local = _local_server(argv, work, ports[name], ports["redis"])
            procs.append(_Redis(work, local).start())
        # And the three sentinels on the files they write, their names made local
        for name in SENTINELS:
            argv, conf = _sentinel_conf(tmp_path, name)
            text = conf.read_text()
            text = text.replace("port 26379", f"port {ports[name]}\nbind 127.0.0.1")
            text = text.replace("mymaster redis 6379", f"mymaster 127.0.0.1 {ports['redis']}")
            text = text.replace(f"announce-ip {name}", "announce-ip 127.0.0.1")
            conf.write_text(text)
            procs.append(_Redis(conf.parent, [str(conf), *argv[2:]]).start())
        sentinels = [redis.Redis(port=ports[n], password="s3cr3tpass") for n in SENTINELS]
        # Then every sentinel sees the others, the primary and its replica: a failover can
        # be agreed on
        wait_for(
            lambda: all(len(s.sentinel_sentinels("mymaster")) == 2 for s in sentinels),
            30,
            what="the three sentinels to know each other",
        )
        for s in sentinels:
            # (the raw answer: redis-py's own parser takes only a bare "OK")
            quorum = s.execute_command("SENTINEL", "CKQUORUM", "mymaster")
            assert quorum.startswith(b"OK 3 usable Sentinels"), quorum
        wait_for(
            lambda: sentinels[0].sentinel_slaves("mymaster"),
            30,
            what="the sentinels to see the replica",
        )
        # When Batchline is wired as the entry point wires it under the profile
        env = _entrypoint(
            {
                "REDIS_SENTINELS": ",".join(f"127.0.0.1:{ports[n]}" for n in SENTINELS),
                "REDIS_PASSWORD": "s3cr3tpass",
                "BATCHLINE_REDIS_URL": f"redis://:s3cr3tpass@127.0.0.1:{ports['redis']}/0",
            }
        )
        settings = Settings(
            redis_url=env["BATCHLINE_REDIS_URL"],
            redis_sentinel_password=env["BATCHLINE_REDIS_SENTINEL_PASSWORD"],
        )
        assert len(parse_sentinels(settings.state)[0]) == 3
        r = connect(settings.state, settings, socket_timeout=5)
        # Then it reaches the primary through the sentinels, and durable writes (auto) wait
        # for the replica
        assert r.info("server")["tcp_port"] == ports["redis"]
        r.set("bl:ha-check", "before")
        wait_for(lambda: r.info("replication")["connected_slaves"] >= 1, 30, what="the replica")
        assert Durability(r, "auto", 2.0).how() == "replica"
        assert r.wait(1, 5000) == 1
        # And the profile's health checks pass on these processes
        for name in ("redis-replica", *SENTINELS):
            assert _health(name, ports[name]), name
        # When the sentinels fail the primary over
        sentinels[0].sentinel_failover("mymaster")
        wait_for(
            lambda: (
                sentinels[1].sentinel_get_master_addr_by_name("mymaster", return_responses=True)
                == (b"127.0.0.1", ports["redis-replica"])
            ),
            30,
            what="the failover",
        )
        # Then a new connection reaches the new primary, with what was written before
        after = connect(settings.state, settings, socket_timeout=5)
        assert after.info("server")["tcp_port"] == ports["redis-replica"]
        assert after.get("bl:ha-check") == b"before"
        after.set("bl:ha-check", "after")
        # And the promoted replica is still healthy, as the primary now
        assert _health("redis-replica", ports["redis-replica"])
    finally:
        stop_all(procs)


# --- no secrets committed ---


def test_no_secret_is_written_in_the_compose_file_or_the_example() -> None:
    data = load()
    text = COMPOSE.read_text()
    assert "sk-ant" not in text and "sk-" not in ENV_EXAMPLE.read_text()
    for name, svc in data["services"].items():
        env = svc.get("environment") or {}
        assert isinstance(env, dict), name
        for key, value in env.items():
            if SECRET_NAME.search(key):
                # Pass-through (no value) or a required reference, nothing literal.
                assert value is None or REQUIRED_REF.match(str(value)), (name, key, value)
        url = env.get("BATCHLINE_REDIS_URL")
        if url:
            assert url.startswith("redis://:${REDIS_PASSWORD:?"), name
    # With a password filled in, it reaches the containers' environment only: never a
    # command, a health check or anything else the file writes down (`docker inspect`, ps).
    password = "s3cr3tpass"
    for name, svc in resolved()["services"].items():
        rest = {k: v for k, v in svc.items() if k != "environment"}
        assert password not in json.dumps(rest), name
    for key, value in env_example().items():
        if SECRET_NAME.search(key):
            assert value in PLACEHOLDERS, key
    # The real .env stays out of git and out of the image.
    assert ".env" in (PROJECT_ROOT / ".gitignore").read_text().split()
    assert ".env" in (PROJECT_ROOT / ".dockerignore").read_text().split()


def test_every_variable_the_compose_file_reads_is_documented() -> None:
    from batchline.cli import main

    text = COMPOSE.read_text()
    used = {m.group(1) for m in VAR.finditer(text) if m.group(1)}
    passed_through = {
        k
        for svc in load()["services"].values()
        for k, v in (svc.get("environment") or {}).items()
        if v is None
    }
    documented = set(env_example()) | {
        m.group(1) for m in re.finditer(r"^# ([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M)
    }
    # Settings are documented in docs/configuration.md, the emulator's variables
    # by `batchline emulator --help`; BATCHLINE_IMAGE names a prebuilt image.
    configuration = (PROJECT_ROOT / "docs" / "configuration.md").read_text()
    configured = set(re.findall(r"`(BATCHLINE_[A-Z0-9_]+)`", configuration))
    emulator_vars = {p.envvar for p in main.commands["emulator"].params if p.envvar}
    missing = (used | passed_through) - documented - configured - emulator_vars
    assert sorted(missing - {"BATCHLINE_IMAGE"}) == []
    assert {v for v in passed_through if v.startswith("BATCHLINE_EMULATOR_")} <= emulator_vars


def _setting_vars() -> set[str]:
    from batchline.settings import Settings

    return {f"BATCHLINE_{n.upper()}" for n in Settings.model_fields}


def test_every_setting_reaches_the_batchline_containers() -> None:
    settings = load()["x-settings"]
    assert set(settings) == _setting_vars()
    # Set here: the wiring and the durability choice; passed through (no value): the rest.
    assert {k for k, v in settings.items() if v is not None} == {
        "BATCHLINE_REDIS_URL",
        "BATCHLINE_LOG_JSON",
        "BATCHLINE_DURABLE_WRITES",
    }
    services = load()["services"]
    for name in ("worker", "worker-api", "beat", "flower", "metrics"):
        assert _setting_vars() <= set(services[name]["environment"]), name


def test_settings_passed_to_containers_are_real_settings() -> None:
    fields = _setting_vars()
    for name, svc in load()["services"].items():
        for key in svc.get("environment") or {}:
            if key.startswith("BATCHLINE_EMULATOR_"):
                continue
            if key.startswith("BATCHLINE_"):
                assert key in fields, (name, key)


def test_the_dockerfile_copies_what_exists_and_is_not_ignored() -> None:
    ignored = [
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [
        line.split()[1:-1]
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("COPY ")
    ]
    sources = [src for srcs in copies for src in srcs if not src.startswith("--")]
    assert {"pyproject.toml", "batchline", "workers", "tasks", "docker/entrypoint.sh"} <= set(
        sources
    )
    for src in sources:
        assert (PROJECT_ROOT / src).exists(), src
        assert not any(Path(src).match(pattern) for pattern in ignored), src
    # The entry point exists, is a POSIX shell script, and the image runs as a user, not root.
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=True)
    assert "\nUSER batchline\n" in DOCKERFILE.read_text()


# --- the `monitoring` profile ---

MONITORING = PROJECT_ROOT / "deploy" / "monitoring"


def _mounts(svc: dict[str, Any]) -> dict[str, Path]:
    """A service's bind mounts of the project's files: container path -> host path."""
    out = {}
    for volume in svc["volumes"]:
        source, target, *mode = volume.split(":")
        if source.startswith("./"):
            assert mode == ["ro"], volume  # configuration only: never written from inside
            out[target] = (COMPOSE.parent / source).resolve()
    return out


def test_prometheus_scrapes_the_metrics_service_and_loads_the_alerts() -> None:
    services = resolved()["services"]
    prom = services["prometheus"]
    mounts = _mounts(prom)
    # Given the files the service mounts: each exists in the project
    for target, source in mounts.items():
        assert source.is_file(), (target, source)
    # Then Prometheus reads the mounted config, and the rule files it names are mounted
    # beside it
    config_path = next(a.split("=", 1)[1] for a in command(prom) if a.startswith("--config."))
    config = yaml.safe_load(mounts[config_path].read_text())
    assert mounts[config_path] == MONITORING / "prometheus.yml"
    for rule_file in config["rule_files"]:
        target = str(Path(config_path).parent / rule_file)
        assert mounts[target] == MONITORING / "alerts.yml", rule_file
    # And it scrapes the metrics service by its compose name, on the port it listens on
    metrics_argv = command(services["metrics"])
    port = metrics_argv[metrics_argv.index("--port") + 1]
    targets = [
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    assert targets == [f"metrics:{port}"]
    # It starts once the exporter answers, keeps its data in a volume, and is published on
    # the host's loopback unless MONITORING_BIND says otherwise
    assert prom["depends_on"] == {"metrics": {"condition": "service_healthy"}}
    assert "prometheus-data:/prometheus" in prom["volumes"]
    assert "prometheus-data" in resolved()["volumes"]
    assert prom["ports"] == ["127.0.0.1:9090:9090"]
    assert prom["image"].startswith("prom/prometheus:")


def test_grafana_loads_the_dashboard_from_the_prometheus_service() -> None:
    services = resolved()["services"]
    graf = services["grafana"]
    mounts = _mounts(graf)
    for target, source in mounts.items():
        assert source.is_dir(), (target, source)
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == MONITORING / "grafana" / "provisioning"
    # The datasource is the prometheus service on the port it serves
    (ds,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    prom_port = services["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert ds["url"] == f"http://prometheus:{prom_port}" and ds["type"] == "prometheus"
    # The dashboard provider reads the folder the dashboards are mounted at, and every panel
    # of every dashboard there queries that datasource
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "batchline.yml").read_text())[
        "providers"
    ]
    folder = mounts[provider["options"]["path"]]
    dashboards = sorted(folder.glob("*.json"))
    assert [d.name for d in dashboards] == ["batchline.json"]
    for path in dashboards:
        panels = [p for p in json.loads(path.read_text())["panels"] if p["type"] != "row"]
        assert panels, path
        for panel in panels:
            assert panel["datasource"]["uid"] == ds["uid"], panel["title"]
            assert all(t["datasource"]["uid"] == ds["uid"] for t in panel["targets"])
    home = graf["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert mounts[str(Path(home).parent)] / Path(home).name == folder / "batchline.json"
    assert graf["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert graf["ports"] == ["127.0.0.1:3000:3000"]
    assert "grafana-data:/var/lib/grafana" in graf["volumes"]
    assert graf["image"].startswith("grafana/grafana:")


def _grafana_start(tmp_path: Path, password: str | None) -> subprocess.CompletedProcess[str]:
    """The grafana service's entry point, with the image's /run.sh replaced by a stand-in
    that says it ran."""
    argv = command({"command": resolved()["services"]["grafana"]["entrypoint"]})
    assert argv[:2] == ["sh", "-c"]
    run = tmp_path / "run.sh"
    run.write_text("#!/bin/sh\necho grafana started\n")
    run.chmod(0o755)
    script = argv[2].replace("/run.sh", str(run))
    env = {"PATH": os.environ["PATH"]}
    if password is not None:
        env["GF_SECURITY_ADMIN_PASSWORD"] = password
    return subprocess.run(
        ["sh", "-c", script, *argv[3:]], env=env, capture_output=True, text=True, timeout=10
    )


def test_grafana_takes_its_admin_password_from_the_environment_or_does_not_start(
    tmp_path: Path,
) -> None:
    raw = load()["services"]["grafana"]
    # The password is passed through from .env or the shell: nothing is written in the file
    assert raw["environment"]["GF_SECURITY_ADMIN_PASSWORD"] is None
    assert "GF_SECURITY_ADMIN_PASSWORD" in env_example()
    # Given no password (or an empty one): Grafana does not start, and says what to set
    for password in (None, ""):
        out = _grafana_start(tmp_path, password)
        assert out.returncode == 1, out
        assert "set GF_SECURITY_ADMIN_PASSWORD in .env" in out.stderr
        assert "grafana started" not in out.stdout
    # Given one: Grafana's own entry point runs
    out = _grafana_start(tmp_path, "pw")
    assert out.returncode == 0 and out.stdout == "grafana started\n", out
