"""The secure stack: Kafka over SASL_SSL with SCRAM users, Redis over TLS with ACL users, one identity per
service, the session's Triton on loopback. The whole pipeline runs through it; a wrong password or a client
without TLS is refused with a clear error; no secret is in a log, a command line, an environment or an error.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from pipelines.drifted import drifted_digits
from pipelines.samples import held_out_payloads
from services.client.publisher import Publisher
from services.common.contract import DriftAlert
from services.common.errors import AccessDenied
from services.common.kafka_admin import KafkaAdmin
from services.common.net import free_ports
from services.common.redis_store import redis_client
from services.common.settings import Settings, load_settings
from services.drift.store import with_store
from services.stack.local_stack import LocalStack
from services.stack.process import group_members
from services.stack.security import StackSecurity
from tests.integration.conftest import PROJECT_ROOT
from tests.integration.drift import alerts_on_kafka, wait_for
from tests.integration.workers import wait_for_predictions

pytestmark = pytest.mark.integration

WINDOW = 50
EVENTS = 150


@pytest.fixture(scope="module")
def secure_stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Kafka, Redis, a worker and the drift monitor of their own, secured, beside the session's Triton."""
    if os.environ.get("DLSTREAM_TEST_ATTACH") == "1":
        pytest.skip("starts a stack of its own")
    kafka, controller, redis_port, web, metrics, drift_web, drift_metrics = free_ports(7)
    secured = load_settings(
        environment="test",
        kafka={"bootstrap_servers": f"127.0.0.1:{kafka}", "partitions": 2},
        redis={"port": redis_port},
        triton=settings.triton.model_dump(),
        inference={"web_port": web, "metrics_port": metrics},
        drift={
            "web_port": drift_web,
            "metrics_port": drift_metrics,
            "window_size": WINDOW,
            "retrain_launcher": "none",
        },
        stack={
            "run_dir": tmp_path_factory.mktemp("secure-stack"),
            "kafka_controller_port": controller,
            "kafka_heap": "512m",
            "start_timeout_s": 300.0,
            "services": ("kafka", "redis", "inference", "drift"),
            "secure": True,
        },
    )
    stack = LocalStack(secured, project_root=PROJECT_ROOT)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def client_env(stack: LocalStack) -> dict[str, str]:
    """The variables of the stack's ``client.env``, as `set -a; . client.env` gives them to a shell."""
    assert stack.security is not None
    env = {}
    for line in stack.security.client_env_path.read_text().splitlines():
        name, _, value = line.partition("=")
        env[name] = "".join(shlex.split(value))
    return env


def client_settings(stack: LocalStack) -> Settings:
    """What the SDK loads in a shell that sourced ``client.env``."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("DLSTREAM_")]:
            patch.delenv(name)
        for name, value in client_env(stack).items():
            patch.setenv(name, value)
        return load_settings()


def cli(stack: LocalStack, *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    """``dlstream ARGS`` in a shell that sourced ``client.env`` (plus ``overrides``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLSTREAM_")}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=PROJECT_ROOT,
        env={**env, **client_env(stack), **overrides},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def secrets_of(security: StackSecurity) -> list[str]:
    """Every password of the stack and every line of its private keys."""
    passwords = [p.read_text().strip() for p in (security.dir / "secrets").glob("*/*")]
    key_lines = [
        line
        for key in (security.key_path, security.dir / "ca.key")
        for line in key.read_text().splitlines()
        if line and not line.startswith("-----")
    ]
    assert len(passwords) >= 7
    assert len(key_lines) > 20
    return passwords + key_lines


def test_inverted_digits_go_through_the_secure_pipeline_to_an_alert(
    secure_stack: LocalStack, tmp_path: Path
) -> None:
    digits, labels = held_out_payloads("digits", 0)
    assert labels is not None
    chosen = random.Random(5).sample(range(len(digits)), EVENTS)
    folder = tmp_path / "inverted"
    folder.mkdir()
    for i, payload in zip(chosen, drifted_digits([digits[i] for i in chosen], "inverted"), strict=True):
        (folder / f"{i:05d}.png").write_bytes(payload)

    published = cli(secure_stack, "publish", "image", str(folder), "--print-ids")
    assert published.returncode == 0, published.stderr
    ids = {json.loads(line)["id"] for line in published.stdout.splitlines()}
    assert len(ids) == EVENTS

    client = client_settings(secure_stack)
    assert client.kafka.sasl_username == "client"
    assert client.kafka.security_protocol == "SASL_SSL"
    predictions = wait_for_predictions(client, ids, idle_timeout_s=120)
    assert set(predictions) == ids
    assert {p.data.model for p in predictions.values()} == {"digits"}

    def alert() -> list[DriftAlert] | None:
        return [a for a in alerts_on_kafka(client) if a.status == "open"] or None

    (raised,) = wait_for(alert, timeout_s=240, what="the drift alert of digits")
    assert raised.model == "digits", raised
    assert raised.predictions_seen <= 2 * WINDOW, raised
    status = cli(secure_stack, "drift", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["digits"]["open_alert"] is not None


def test_a_wrong_password_or_a_client_without_tls_is_refused_with_a_clear_error(
    secure_stack: LocalStack, tmp_path: Path
) -> None:
    client = client_settings(secure_stack)
    security = secure_stack.security
    assert security is not None
    secrets = secrets_of(security)
    errors: list[str] = []

    wrong = client.kafka.model_copy(update={"sasl_password": SecretStr("not-the-password")})
    with pytest.raises(AccessDenied, match="refused the credentials of user 'client'") as denied:
        KafkaAdmin(wrong, timeout_s=5).list_topics()
    errors.append(str(denied.value))
    plaintext = client.kafka.model_copy(update={"security_protocol": "SASL_PLAINTEXT"})
    with pytest.raises(AccessDenied, match="speaks TLS only") as denied:
        KafkaAdmin(plaintext, timeout_s=5).list_topics()
    errors.append(str(denied.value))

    redis_wrong = client.redis.model_copy(update={"password": SecretStr("not-the-password")})
    with pytest.raises(AccessDenied, match="Redis refused the credentials") as denied:
        redis_client(redis_wrong).ping()
    errors.append(str(denied.value))
    with pytest.raises(AccessDenied, match="speaks TLS only") as denied:
        redis_client(client.redis.model_copy(update={"tls": False})).ping()
    errors.append(str(denied.value))
    # The client's ACL user reads dlstream's keys and writes nothing.
    with pytest.raises(AccessDenied, match="no permissions") as denied:
        with_store(client, lambda store: store.publish_references({("digits", "9"): "{}"}))
    errors.append(str(denied.value))

    # In Kafka the client publishes requests and labels and reads outcomes; nothing else.
    with pytest.raises(AccessDenied, match="denied user 'client' a right") as denied:
        KafkaAdmin(client.kafka, timeout_s=10).delete_topics([client.topics.alerts])
    errors.append(str(denied.value))
    with pytest.raises(AccessDenied, match="denied user 'client' a right") as denied:
        KafkaAdmin(client.kafka, timeout_s=10).ensure_topics(["made.up"], partitions=1)
    errors.append(str(denied.value))
    with Publisher(client) as publisher:
        publisher.send_record(client.topics.alerts, None, b"{}", [])
        with pytest.raises(AccessDenied, match="denied user 'client' a right") as denied:
            publisher.flush(timeout_s=30)
    errors.append(str(denied.value))
    # Nor may the worker read what the monitor consumes, or take the monitor's group.
    worker = security.apply(secure_stack.settings, "inference")
    with pytest.raises(AccessDenied, match="denied user 'inference' a right") as denied:
        KafkaAdmin(worker.kafka, timeout_s=10).ensure_topics([f"{worker.drift.group_id}-x"], partitions=1)
    errors.append(str(denied.value))

    # The CLI says the same in one line (exit code 2), without a traceback.
    sample = tmp_path / "one.txt"
    sample.write_text("a secured line")
    refused = cli(secure_stack, "publish", "text", str(sample), DLSTREAM_KAFKA__SASL_PASSWORD="not-it")
    assert refused.returncode == 2, refused.stderr
    assert "error: Kafka at" in refused.stderr
    assert "refused the credentials" in refused.stderr
    assert "Traceback" not in refused.stderr
    refused = cli(secure_stack, "drift", "status", DLSTREAM_REDIS__TLS="false")
    assert refused.returncode == 2, refused.stderr
    assert "error: Redis refused the connection" in refused.stderr
    assert "speaks TLS only" in refused.stderr
    errors += [refused.stderr]

    for text in errors:
        assert not any(secret in text for secret in secrets), text


def test_no_secret_in_logs_command_lines_or_environments_of_the_stack(secure_stack: LocalStack) -> None:
    security = secure_stack.security
    assert security is not None
    secrets = secrets_of(security)
    properties = secure_stack.run_dir / "kafka" / "server.properties"
    assert properties.stat().st_mode & 0o077 == 0  # the broker's own password, for its owner only
    assert security.dir.stat().st_mode & 0o077 == 0

    scanned = 0
    for path in secure_stack.run_dir.rglob("*"):
        if not path.is_file() or security.dir in path.parents or path == properties:
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{path} holds a secret"
        scanned += 1
    assert scanned >= 5

    pids = []
    for name in secure_stack.services:
        record = secure_stack.record(name)
        assert record is not None, name
        pids += group_members(record.pid)
    listing = subprocess.run(
        ["ps", "eww", "-o", "pid=,args=", "-p", ",".join(map(str, pids))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert len(listing.splitlines()) == len(pids)
    assert "DLSTREAM_SECRETS_DIR=" in listing  # the services got a folder, not the secrets
    for pid in pids:
        environment = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        assert not any(s in environment for s in secrets), pid
    assert not any(s in listing for s in secrets)
