"""docker-compose.yaml has the production shape (no Docker engine here: its YAML is checked).

Airflow 3's api-server, scheduler, dag-processor, triggerer and a Celery worker, all built from
the repository's Dockerfile with one shared environment; PostgreSQL, Redis and MinIO behind
health checks; one-shot init services; named volumes; and a .env.example with placeholders only.
The hardening is checked for real: the preflight service's check (include/deploy/preflight.py)
refuses .env.example as it is and accepts generated secrets, every service waits for it, the
Fernet key is required, and published ports bind to 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"

AIRFLOW = {"airflow-api-server": "api-server", "airflow-scheduler": "scheduler",
           "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer",
           "airflow-worker": "celery worker"}
BACKING = ("postgres", "redis", "minio")
ONE_SHOT = ("preflight", "minio-init", "airflow-init")
# What the README's "Run it on docker-compose" section names.
PIPELINE_ENV = {"MOBILEDET_CHECKPOINT_STORE": "s3://checkpoints/",
                "MOBILEDET_STORE": "s3://models/mobiledet"}
SECRET_NAMES = re.compile(r"PASSWORD|SECRET|KEY|TOKEN", re.I)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not KEY=VALUE"
            out[key] = value
    return out


def _env(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command(service: dict) -> str:
    cmd = service.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def test_every_service_of_the_production_shape_exists(services):
    assert set(AIRFLOW) | set(BACKING) | set(ONE_SHOT) <= set(services)
    for name, subcommand in AIRFLOW.items():
        assert _command(services[name]).startswith(subcommand), name
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert "minio/minio" in services["minio"]["image"]


def test_airflow_services_share_the_image_built_from_the_dockerfile(compose, services):
    assert "x-airflow-common" in compose
    assert (REPO / "Dockerfile").is_file()
    images = set()
    for name in (*AIRFLOW, "airflow-init"):
        service = services[name]
        assert service["build"] in (".", {"context": "."}), name
        images.add(service["image"])
    assert len(images) == 1  # one image for every Airflow service
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"apache/airflow:3\.3\.\d", dockerfile)


def test_long_running_services_have_health_checks(services):
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
            continue
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable"), name
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"{name} healthcheck has no {key}"
    api = " ".join(services["airflow-api-server"]["healthcheck"]["test"])
    assert "/api/v2/" in api
    assert "/execution/health" in api   # the tasks' API too, and its warm-up
    worker = " ".join(services["airflow-worker"]["healthcheck"]["test"])
    assert "inspect ping" in worker


def test_depends_on_waits_for_health(services):
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on must give conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert dep != name, f"{name} depends on itself"
            want = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert spec.get("condition") == want, f"{name} -> {dep}: {spec}"
    for name in AIRFLOW:
        deps = services[name]["depends_on"]
        assert {"postgres", "redis", "minio", "airflow-init"} <= set(deps), name
    assert "airflow-api-server" in services["airflow-worker"]["depends_on"]
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_named_volumes_are_declared_and_used(compose, services):
    declared = set(compose.get("volumes") or {})
    assert {"postgres-db", "minio-data", "airflow-logs"} <= declared
    used = set()
    for service in services.values():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"volume {source} is not declared"
                used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"
    assert any(v.startswith("postgres-db:") for v in services["postgres"]["volumes"])
    assert any(v.startswith("minio-data:") for v in services["minio"]["volumes"])


def test_airflow_environment_agrees(services):
    for name in AIRFLOW:
        env = _env(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
        for key, value in PIPELINE_ENV.items():
            assert env[key] == value, (name, key)
        # the task supervisor's settings are the ones `mobiledet serve` and the tests run with
        from include.deploy.environment import TASK_SUPERVISOR_ENV
        for key, value in TASK_SUPERVISOR_ENV.items():
            assert env[key] == value, (name, key)
        assert env["MOBILEDET_DATA"]
        # The execution API URL names the api-server service and the port it listens on.
        url = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
        assert url.hostname == "airflow-api-server" and url.path == "/execution/"
        port = re.search(r"--port (\d+)", _command(services["airflow-api-server"])).group(1)
        assert str(url.port) == port == env["AIRFLOW__API__PORT"]
        assert any(str(p).endswith(f":{port}:{port}") for p in
                   services["airflow-api-server"]["ports"])
        # Metadata DB on the postgres service, broker on the redis service.
        assert "@postgres:5432/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
        assert urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"
        # One secret for everyone that signs and checks tokens.
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET")


def test_aws_default_points_at_minio_and_the_buckets_exist(services):
    env = _env(services["airflow-worker"])
    conn = json.loads(re.sub(r"\$\{[^}]*\}", "x", env["AIRFLOW_CONN_AWS_DEFAULT"]))
    assert conn["conn_type"] == "aws"
    assert urlsplit(conn["extra"]["endpoint_url"]).hostname == "minio"
    assert urlsplit(conn["extra"]["endpoint_url"]).port == 9000
    init = _command(services["minio-init"])
    made = set(re.findall(r"local/([a-z0-9.-]+)", init.split("mc mb", 1)[1].split("\n")[0]))
    for value in PIPELINE_ENV.values():
        assert urlsplit(value).netloc in made, value
    assert "airflow db migrate" in _command(services["airflow-init"])
    assert "connections get aws_default" in _command(services["airflow-init"])


def test_env_example_defines_every_required_variable(env_example):
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert required, "the compose file requires its secrets from .env"
    assert required <= set(env_example), f"missing in .env.example: {required - set(env_example)}"
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    assert referenced <= set(env_example), \
        f"referenced but not in .env.example: {referenced - set(env_example)}"


def test_env_example_holds_no_real_secret(env_example):
    for key, value in env_example.items():
        if SECRET_NAMES.search(key):
            assert value == "" or value.startswith("change-me"), f"{key}={value!r}"
    text = ENV_EXAMPLE.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)            # AWS access key ids
    assert not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY", text)
    for value in env_example.values():  # nothing that looks generated (long random tokens)
        assert not re.fullmatch(r"[A-Za-z0-9_\-+/=]{32,}", value), value


# -- hardening ------------------------------------------------------------------------------
def _filled_env(env_example) -> dict:
    import secrets

    from cryptography.fernet import Fernet
    env = dict(env_example)
    for key, value in env.items():
        if "change-me" in value:
            env[key] = "mobiledet" if key == "MINIO_ROOT_USER" else secrets.token_urlsafe(32)
    env["AIRFLOW_FERNET_KEY"] = Fernet.generate_key().decode()
    return env


def test_preflight_refuses_the_example_env_as_it_is(tmp_path, capsys):
    from include.deploy.preflight import SECRETS, main
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text())       # copied, not filled in
    assert main(["--env-file", str(env_file)]) == 1
    err = capsys.readouterr().err
    for name in SECRETS:                              # every placeholder named, with its fix
        assert f"{name} is still the placeholder" in err, name
    assert "AIRFLOW_FERNET_KEY is empty" in err and "Fernet.generate_key()" in err
    assert "refusing to start" in err


def test_preflight_accepts_real_secrets_and_refuses_weak_ones(env_example, tmp_path, capsys):
    from include.deploy.preflight import main, problems
    good = _filled_env(env_example)
    assert problems(good) == []
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in good.items()))
    assert main(["--env-file", str(env_file)]) == 0
    weak = dict(good, POSTGRES_PASSWORD="hunter2", AIRFLOW_JWT_SECRET="short-secret",
                AIRFLOW_FERNET_KEY="not-a-key", MINIO_ROOT_PASSWORD="CHANGE-ME-too")
    found = "\n".join(problems(weak))
    assert "POSTGRES_PASSWORD is 7 characters; at least 12" in found
    assert "AIRFLOW_JWT_SECRET is 12 characters; at least 32" in found
    assert "AIRFLOW_FERNET_KEY is not a Fernet key" in found
    assert "MINIO_ROOT_PASSWORD is still the placeholder" in found
    assert len(problems(weak)) == 4


def test_every_service_waits_for_the_preflight(services):
    pre = services["preflight"]
    assert pre["entrypoint"] == ["python", "-m", "include.deploy.preflight"]
    assert pre["image"] == services["airflow-scheduler"]["image"]
    from include.deploy.preflight import SECRETS
    assert set(SECRETS) | {"AIRFLOW_FERNET_KEY"} <= set(_env(pre))

    def waits(name, seen=()):
        deps = services[name].get("depends_on") or {}
        return "preflight" in deps or any(waits(d, seen + (name,)) for d in deps
                                          if d not in seen)
    for name in services:
        if name != "preflight":
            assert waits(name), f"{name} can start before the preflight check"
    for name in BACKING:   # the ones holding passwords start only after it, directly
        assert services[name]["depends_on"]["preflight"]["condition"] == \
            "service_completed_successfully"


def test_fernet_key_is_required(services):
    for name in AIRFLOW:
        value = _env(services[name])["AIRFLOW__CORE__FERNET_KEY"]
        assert re.fullmatch(r"\$\{AIRFLOW_FERNET_KEY:\?[^}]+\}", value), value


def test_published_ports_bind_to_localhost_unless_told(services, env_example):
    published = 0
    for name, service in services.items():
        for port in service.get("ports") or []:
            published += 1
            assert str(port).startswith("${MOBILEDET_BIND_ADDRESS:-127.0.0.1}:"), (name, port)
            assert str(port).count(":") == 3, (name, port)   # address:host:container
    assert published == 3    # 8080, 9000, 9001
    assert env_example["MOBILEDET_BIND_ADDRESS"] == "127.0.0.1"
