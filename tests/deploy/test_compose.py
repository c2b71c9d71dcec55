"""docker-compose.yml validates against the Compose spec (Debian's docker-compose) and is complete."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import PROJECT_ROOT

pytestmark = pytest.mark.deploy

PROFILES = ("cpu", "gpu")
ONE_SHOT = {"models"}


def compose_config(profile: str) -> dict[str, Any]:
    """The file as docker-compose resolves it for ``profile`` (validated against the spec on the way)."""
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is missing; run `make setup` (Debian package docker-compose)"
    result = subprocess.run(
        [compose, "-f", str(PROJECT_ROOT / "docker-compose.yml"), "--profile", profile, "config"],
        env={**os.environ, "REDIS_PASSWORD": "test-only", "TRITON_CONTROL_KEY_FILE": "/dev/null"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.mark.parametrize("profile", PROFILES)
def test_the_compose_file_is_valid_and_every_service_is_checked_and_ordered(profile: str) -> None:
    services = compose_config(profile)["services"]
    triton = f"triton-{profile}"
    assert {"kafka", "redis", "models", triton, "inference", "drift", "retrainer"} <= set(services)
    for name, service in services.items():
        if name not in ONE_SHOT:
            assert "healthcheck" in service, name
        assert str(service.get("user", "0")).split(":")[0] not in ("0", "root"), f"{name} runs as root"
    conditions = {
        name: {dep: spec["condition"] for dep, spec in service.get("depends_on", {}).items()}
        for name, service in services.items()
    }
    assert conditions["inference"] == {"kafka": "service_healthy", "models": "service_completed_successfully"}
    assert conditions["drift"]["redis"] == "service_healthy"
    assert conditions["models"] == {"redis": "service_healthy"}
    assert conditions[triton] == {"models": "service_completed_successfully"}


@pytest.mark.parametrize("profile", PROFILES)
def test_only_triton_the_build_and_the_retrainer_mount_the_model_repository(profile: str) -> None:
    services = compose_config(profile)["services"]
    mounting = {
        name
        for name, service in services.items()
        if any("/models" in str(volume) for volume in service.get("volumes", []))
    }
    tritons = {name for name in services if name.startswith("triton-")}
    assert f"triton-{profile}" in tritons
    assert mounting == {"models", "retrainer", *tritons}
    assert services["drift"]["environment"]["DLSTREAM_DRIFT__RETRAIN_LAUNCHER"] == "queue"


@pytest.mark.parametrize("profile", PROFILES)
def test_tritons_control_api_needs_the_key_that_only_the_retrainer_gets(profile: str) -> None:
    services = compose_config(profile)["services"]
    triton = services[f"triton-{profile}"]
    startup = " ".join(triton["entrypoint"])
    restricted = "model-repository,shared-memory,logging,trace:dlstream-control-key=$$key"
    assert f'--http-restricted-api="{restricted}"' in startup
    assert f'--grpc-restricted-protocol="{restricted}"' in startup
    holding = {
        name
        for name, service in services.items()
        if any("triton_control_key" in str(secret) for secret in service.get("secrets", []))
    }
    tritons = {name for name in services if name.startswith("triton-")}
    assert holding == {*tritons, "retrainer"}
    assert services["retrainer"]["environment"]["DLSTREAM_SECRETS_DIR"] == "/run/secrets/dlstream"


def test_triton_reserves_a_gpu_in_the_gpu_profile_only() -> None:
    gpu = compose_config("gpu")["services"]["triton-gpu"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    assert "--model-config-name=gpu" in gpu["command"]
    cpu = compose_config("cpu")["services"]["triton-cpu"]
    assert "deploy" not in cpu


def test_a_missing_redis_password_is_refused() -> None:
    compose = shutil.which("docker-compose")
    assert compose
    env = {k: v for k, v in os.environ.items() if k != "REDIS_PASSWORD"}
    result = subprocess.run(
        [compose, "-f", str(PROJECT_ROOT / "docker-compose.yml"), "--profile", "cpu", "config", "-q"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "REDIS_PASSWORD" in result.stderr


def test_the_dockerfiles_pin_their_bases_and_run_as_non_root() -> None:
    for path in sorted((PROJECT_ROOT / "docker").glob("*Dockerfile")):
        text = path.read_text()
        bases = [
            line.split("=", 1)[1]
            for line in text.splitlines()
            if line.startswith("ARG ") and "_IMAGE=" in line
        ]
        assert bases, path
        assert all(":" in b and not b.endswith(":latest") for b in bases), bases
        users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
        assert users, path
        assert users[-1].split(":")[0] not in ("0", "root"), f"{path.name} ends as root"
