"""The secure stack: Kafka over SASL_SSL with SCRAM users, Redis over TLS with ACL users, one identity per
service, and a Triton of its own whose control API needs a key, run as the unprivileged service user. The
whole pipeline runs through it; a wrong password, a client without TLS or a control request without the key is
refused with a clear error; no secret is in a log, a command line, an environment or an error; nothing the
stack keeps at rest is readable by another local user.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from pydantic import SecretStr
from tritonclient.utils import InferenceServerException

from dlstream.adapters.kafka.admin import KafkaAdmin
from dlstream.adapters.redis.connection import redis_client
from dlstream.adapters.redis.drift_store import with_store
from dlstream.adapters.triton.control import load_in_triton
from dlstream.client.publisher import Publisher
from dlstream.config.settings import Settings, load_settings
from dlstream.domain.card import CARD_FILE, read_card
from dlstream.domain.contract import DriftAlert
from dlstream.domain.errors import AccessDenied
from dlstream.models.samples import held_out_payloads
from dlstream.models.zoo.drifted import drifted_digits
from dlstream.retrain.job import promote
from dlstream.retrain.report import RetrainingReport
from dlstream.runtime.net import free_ports
from dlstream.tools.stack.local_stack import LocalStack
from dlstream.tools.stack.process import group_members
from dlstream.tools.stack.security import StackSecurity
from dlstream.tools.stack.service import service_account, unreachable_part
from dlstream.tools.stack.triton_server import TritonServer
from tests.integration.conftest import PROJECT_ROOT
from tests.integration.drift import alerts_on_kafka, wait_for
from tests.integration.workers import wait_for_predictions

pytestmark = pytest.mark.integration

WINDOW = 50
EVENTS = 150
SERVICE_USER = "dlstream"


def serves_as_service_user() -> bool:
    """Whether the servers can run as the service user here: the tests run as root, the user exists (made
    by `make setup`), and it can reach this checkout (Triton runs from its venv)."""
    account = service_account(SERVICE_USER)
    return account is not None and unreachable_part(PROJECT_ROOT / ".venv" / "x", *account) is None


@pytest.fixture(scope="module")
def secure_stack(settings: Settings) -> Iterator[LocalStack]:
    """Kafka, Redis, Triton (``digits`` and ``healthcheck``), a worker and the drift monitor of their own,
    secured. Its folder is open to other users for passing only (pytest's are closed), so that Triton, run
    as the service user, reaches its repository and run folder."""
    if os.environ.get("DLSTREAM_TEST_ATTACH") == "1":
        pytest.skip("starts a stack of its own")
    home = Path(tempfile.mkdtemp(prefix="dlstream-secure-"))
    home.chmod(0o711)
    repository = home / "model_repo"
    repository.mkdir(mode=0o755)
    for name in ("healthcheck", "digits"):
        shutil.copytree(PROJECT_ROOT / settings.triton.model_repository / name, repository / name)
    kafka, controller, redis_port, web, metrics, drift_web, drift_metrics, *triton = free_ports(10)
    secured = load_settings(
        environment="test",
        kafka={"bootstrap_servers": f"127.0.0.1:{kafka}", "partitions": 2},
        redis={"port": redis_port},
        triton={
            "http_port": triton[0],
            "grpc_port": triton[1],
            "metrics_port": triton[2],
            "model_repository": repository,
        },
        inference={"web_port": web, "metrics_port": metrics},
        drift={
            "web_port": drift_web,
            "metrics_port": drift_metrics,
            "window_size": WINDOW,
            "retrain_launcher": "none",
        },
        stack={
            "run_dir": home / "run",
            "kafka_controller_port": controller,
            "kafka_heap": "512m",
            "start_timeout_s": 300.0,
            "secure": True,
            "service_user": SERVICE_USER if serves_as_service_user() else "",
        },
    )
    stack = LocalStack(secured, project_root=PROJECT_ROOT)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()
        shutil.rmtree(home, ignore_errors=True)


def client_env(stack: LocalStack, admin: bool = False) -> dict[str, str]:
    """The variables of the stack's ``client.env`` (or ``admin.env``), as `set -a; . client.env` gives
    them to a shell."""
    assert stack.security is not None
    env = {}
    path = stack.security.admin_env_path if admin else stack.security.client_env_path
    for line in path.read_text().splitlines():
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


def cli(
    stack: LocalStack, *args: str, as_admin: bool = False, **overrides: str
) -> subprocess.CompletedProcess[str]:
    """``dlstream ARGS`` in a shell that sourced ``client.env`` (``admin.env`` with ``as_admin``, plus
    ``overrides``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLSTREAM_")}
    return subprocess.run(
        [sys.executable, "-m", "dlstream.cli", *args],
        cwd=PROJECT_ROOT,
        env={**env, **client_env(stack, admin=as_admin), **overrides},
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

    # The report page shows what Redis gives only to ACL users: the client's credentials open it.
    url = f"http://127.0.0.1:{secure_stack.settings.drift.web_port}/report?model=digits"
    assert client.redis.password is not None
    login = base64.b64encode(f"client:{client.redis.password.get_secret_value()}".encode()).decode()
    with urllib.request.urlopen(
        urllib.request.Request(url, headers={"Authorization": f"Basic {login}"}), timeout=60
    ) as page:
        assert "<h2>digits</h2>" in page.read().decode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=60)
    assert refused.value.code == 401
    refused.value.close()


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
    # TLS without SASL: the listener wants SCRAM, and the error says so (not "Unable to bootstrap").
    no_sasl = client.kafka.model_copy(update={"security_protocol": "SSL"})
    with pytest.raises(AccessDenied, match="requires SASL authentication \\(SCRAM-SHA-512\\)") as denied:
        KafkaAdmin(no_sasl, timeout_s=5).list_topics()
    assert "use SASL_SSL with a user and password" in str(denied.value)
    errors.append(str(denied.value))
    # A denied describe-configs is a denial, not an empty configuration.
    with pytest.raises(AccessDenied, match="denied user 'client' a right") as denied:
        KafkaAdmin(client.kafka, timeout_s=10).topic_configs(client.topics.image)
    errors.append(str(denied.value))
    configs = KafkaAdmin(secure_stack.settings.kafka, timeout_s=10).topic_configs(client.topics.image)
    assert configs["cleanup.policy"] == "delete"

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
        if path.is_file() and path.parent.name == "material":
            # A server run as the service user gets its own copy of the key material it needs.
            assert path.stat().st_mode & 0o777 == 0o600, path
            assert path.parent.stat().st_mode & 0o777 == 0o700, path
            continue
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


CONTROL_REFUSED = "is restricted, expecting header"
# What an intruder would have Triton run: a Python-backend model that leaves a mark as it loads.
INTRUDER_MODEL = """
import pathlib
class TritonPythonModel:
    def initialize(self, args):
        pathlib.Path({mark!r}).write_text("ran")
    def execute(self, requests):
        return []
"""
INTRUDER_CONFIG = json.dumps(
    {
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "IN", "data_type": "TYPE_FP32", "dims": [1]}],
        "output": [{"name": "OUT", "data_type": "TYPE_FP32", "dims": [1]}],
    }
)


def _digit_folder(tmp_path: Path, count: int, seed: int) -> Path:
    digits, _ = held_out_payloads("digits", 0)
    folder = tmp_path / f"digits-{seed}"
    folder.mkdir()
    for i in random.Random(seed).sample(range(len(digits)), count):
        (folder / f"{i:05d}.png").write_bytes(digits[i])
    return folder


def _stream_digits(stack: LocalStack, tmp_path: Path, count: int, seed: int) -> dict[str, str]:
    """Publish ``count`` held-out digits with the CLI as ``client``; the version of each prediction."""
    published = cli(stack, "publish", "image", str(_digit_folder(tmp_path, count, seed)), "--print-ids")
    assert published.returncode == 0, published.stderr
    ids = {json.loads(line)["id"] for line in published.stdout.splitlines()}
    found = wait_for_predictions(client_settings(stack), ids, idle_timeout_s=120)
    assert set(found) == ids
    return {i: p.data.model_version for i, p in found.items()}


def _control_attempts(client: Any, headers: dict[str, str], upload: dict[str, bytes]) -> list[str]:
    """Each control request Triton must refuse without the key, and Triton's refusal of it."""
    attempts: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("unload_model", ("digits",), {}),
        ("load_model", ("digits",), {}),
        ("load_model", ("digits",), {"config": INTRUDER_CONFIG}),
        ("load_model", ("intruder",), {"config": INTRUDER_CONFIG, "files": upload}),
        ("get_model_repository_index", (), {}),
        ("register_system_shared_memory", ("probe", "/probe", 64), {}),
    ]
    refusals = []
    for method, args, options in attempts:
        with pytest.raises(InferenceServerException, match=CONTROL_REFUSED) as refused:
            getattr(client, method)(*args, headers=headers, **options)
        refusals.append(str(refused.value))
    return refusals


def test_triton_refuses_every_control_request_without_the_key(secure_stack: LocalStack) -> None:
    triton = secure_stack.settings.triton
    assert triton.control_key is not None
    # A folder Triton, as the service user, could leave the mark in if it ran the model (pytest's are closed).
    drop = Path(tempfile.mkdtemp(prefix="dlstream-intruder-"))
    drop.chmod(0o777)
    mark = drop / "ran"
    upload = {"file:1/model.py": INTRUDER_MODEL.format(mark=str(mark)).encode()}
    http = triton_http.InferenceServerClient(triton.http_url)
    grpc = triton_grpc.InferenceServerClient(triton.grpc_url)
    grpc_header = f"triton-grpc-protocol-{triton.control_header}"
    refusals: list[str] = []
    try:
        for client, header in ((http, triton.control_header), (grpc, grpc_header)):
            for headers in ({}, {header: "not-the-key"}):
                refusals += _control_attempts(client, headers, upload)
        # Nothing changed: the models still serve, the intruder never ran. Inference and health stay open.
        assert http.is_model_ready("digits")
        assert http.is_model_ready("healthcheck")
        assert not http.is_model_ready("intruder")
        assert not mark.exists()
    finally:
        http.close()
        grpc.close()
        shutil.rmtree(drop)
    assert len(refusals) == 24
    assert "expecting header 'dlstream-control-key'" in refusals[0]

    # dlstream's own control path says which setting is missing, for an identity without the key.
    worker = secure_stack.security.apply(secure_stack._settings, "inference")  # type: ignore[union-attr]
    with pytest.raises(AccessDenied, match="refused a control request") as denied:
        load_in_triton(worker.triton, "digits", 1)
    assert "DLSTREAM_TRITON__CONTROL_KEY" in str(denied.value)
    assert triton.control_key.get_secret_value() not in str(denied.value)


def test_with_the_key_models_add_a_retraining_promotion_and_a_rollback_work(
    secure_stack: LocalStack, tmp_path: Path
) -> None:
    security = secure_stack.security
    assert security is not None
    repository = secure_stack.repository
    # models add (an owner's Triton folder) as the operator of admin.env; the client may not.
    labels = tmp_path / "labels.txt"
    labels.write_text("short\nmedium\nlong\n")
    reference = tmp_path / "reference"
    for label, size in {"short": 5, "medium": 30, "long": 90}.items():
        (reference / label).mkdir(parents=True)
        (reference / label / "texts.txt").write_text("\n".join("x" * (size + i) for i in range(10)) + "\n")
    folder = PROJECT_ROOT / "tests" / "own_model" / "lengths"
    add = ["models", "add", "lengths", "--modality", "text", "--triton", str(folder)]
    add += ["--labels", str(labels), "--reference", str(reference)]
    added = cli(secure_stack, *add, as_admin=True)
    assert added.returncode == 0, added.stderr
    removed = cli(secure_stack, "models", "remove", "lengths")
    assert removed.returncode == 2, removed.stderr
    assert "refused a control request" in removed.stderr
    assert "Traceback" not in removed.stderr
    removed = cli(secure_stack, "models", "remove", "lengths", as_admin=True)
    assert removed.returncode == 0, removed.stderr

    # A retraining job's promotion, as the monitor's identity: digits version 2 (a copy of version 1).
    digits = repository / "digits"
    shutil.copytree(digits / "1", digits / "2")
    (digits / "2" / CARD_FILE).write_text(read_card(digits / "1").model_copy(update={"version": 2}).to_json())
    drift = security.apply(secure_stack._settings, "drift")
    gate = RetrainingReport(model="digits", promoted=True, reason="a copy of version 1")
    report = promote(drift, repository, "digits", 2, gate, time.monotonic())
    assert report.new_version == 2
    # The worker, which holds no key, follows the promotion and still infers.
    assert set(_stream_digits(secure_stack, tmp_path, 20, seed=11).values()) == {"2"}

    rolled = cli(secure_stack, "models", "rollback", "digits", as_admin=True)
    assert rolled.returncode == 0, rolled.stderr
    assert "serves version 1" in rolled.stdout
    assert set(_stream_digits(secure_stack, tmp_path, 20, seed=12).values()) == {"1"}


def test_nothing_the_stack_keeps_at_rest_is_readable_by_another_user(
    secure_stack: LocalStack, tmp_path: Path
) -> None:
    _stream_digits(secure_stack, tmp_path, 100, seed=13)
    files = [p for p in secure_stack.run_dir.rglob("*") if p.is_file()]
    segments = [p for p in files if p.suffix == ".log" and "-" in p.parent.name and p.stat().st_size]
    assert segments, "no Kafka log segment with data"
    aof = [p for p in files if p.name.startswith("appendonly")]
    # What the servers write themselves is their owner's alone (umask 077), not only its folder.
    for path in [*segments, *aof]:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is {path.stat().st_mode & 0o777:04o}"

    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    readable = subprocess.run(
        [*as_nobody, "xargs", "-0", "sh", "-c", 'for f; do test -r "$f" && echo "$f"; done; true', "sh"],
        input="\0".join(map(str, files)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(files) > 20
    assert readable == []

    # The Python backend's shared-memory regions live in Triton's private /dev/shm, none in the host's.
    triton = secure_stack.services["triton"]
    assert isinstance(triton, TritonServer)
    assert not list(Path("/dev/shm").glob(f"{triton.shm_prefix}*"))
    record = secure_stack.record("triton")
    assert record is not None
    regions = subprocess.run(
        ["nsenter", "-t", str(record.pid), "-m", *as_nobody, "sh", "-c", "ls /dev/shm && echo listed"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "listed" not in regions.stdout  # not even their names
    inside = subprocess.run(
        ["nsenter", "-t", str(record.pid), "-m", "ls", "-ln", "/dev/shm"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert triton.shm_prefix in inside
    # Started by root, the servers run as the service user, never as root.
    if not serves_as_service_user():
        print(f"the servers ran as the starting user: {SERVICE_USER!r} cannot reach {PROJECT_ROOT}")
        return
    service_uid = pwd.getpwnam(SERVICE_USER).pw_uid
    for name in ("kafka", "redis", "triton"):
        server = secure_stack.record(name)
        assert server is not None
        uid = int(Path(f"/proc/{server.pid}/status").read_text().split("Uid:")[1].split()[0])
        assert uid == service_uid, name


def test_a_second_stack_beside_the_first_stops_with_no_process_left(secure_stack: LocalStack) -> None:
    """Last in this module: it stops the module's stack. A second full stack, on ports of its own beside the
    session's, is healthy, and after ``down`` no process of its process groups is left, Triton's backend
    stubs included."""
    statuses = secure_stack.status()
    assert all(s.ok for s in statuses), statuses
    pids = [s.pid for s in statuses if s.pid is not None]
    assert len(pids) == len(secure_stack.services)
    assert any(len(group_members(pid)) > 1 for pid in pids), "Triton's backend stub runs in its group"
    metrics = secure_stack.settings.inference.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as response:
        assert b"dlstream_events_in" in response.read()
    secure_stack.down()
    assert all(group_members(pid) == [] for pid in pids)
    assert {s.state for s in secure_stack.status()} == {"stopped"}
