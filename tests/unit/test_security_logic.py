"""Secrets from a folder, children handed the folder instead of the secrets, the secure stack's identities
and the words of a refusal."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from kafka.errors import KafkaTimeoutError, SaslAuthenticationFailedError, TopicAuthorizationFailedError
from pydantic import ValidationError
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError

from dlstream.adapters.kafka.refusals import kafka_failure, sasl_handshake_mechanisms, sasl_handshake_request
from dlstream.adapters.redis.connection import redis_failure
from dlstream.config.settings import load_settings, settings_env
from dlstream.domain.errors import AccessDenied, TransientError
from dlstream.tools.stack.security import (
    IDENTITIES,
    KAFKA_SUPER_USERS,
    REDIS_RIGHTS,
    TRITON_CONTROLLERS,
    StackSecurity,
    kafka_grants,
)

pytestmark = pytest.mark.unit


def _secrets(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in files.items():
        (folder / name).write_text(value + "\n")
    return folder


def test_secret_files_fill_their_settings_below_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _secrets(tmp_path / "s", kafka__sasl_password="from-file", redis__password="redis-file")
    (folder / "..data").mkdir()  # a mounted Kubernetes Secret's bookkeeping is skipped
    (folder / "README").write_text("not a setting")
    monkeypatch.setenv("DLSTREAM_SECRETS_DIR", str(folder))
    monkeypatch.setenv("DLSTREAM_REDIS__PASSWORD", "from-env")
    settings = load_settings()
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "from-file"  # trailing newline dropped
    assert settings.redis.password is not None
    assert settings.redis.password.get_secret_value() == "from-env"


def test_a_misspelt_secret_file_or_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    folder = _secrets(tmp_path / "s", kafka__sasl_pasword="typo")
    with pytest.raises(ValueError, match="kafka__sasl_pasword names no setting"):
        load_settings(secrets_dir=folder)
    with pytest.raises(ValueError, match="is not a folder"):
        load_settings(secrets_dir=tmp_path / "missing")


def test_production_takes_its_redis_password_from_the_folder(tmp_path: Path) -> None:
    folder = _secrets(tmp_path / "s", redis__password="s3cret")
    settings = load_settings(environment="production", secrets_dir=folder, kafka={"security_protocol": "SSL"})
    assert settings.redis.password is not None
    with pytest.raises(ValidationError, match="DLSTREAM_REDIS__PASSWORD"):
        load_settings(environment="production", kafka={"security_protocol": "SSL"})


def test_a_child_gets_the_secrets_folder_and_no_secret(tmp_path: Path) -> None:
    folder = _secrets(tmp_path / "s", kafka__sasl_password="kafka-secret", redis__password="redis-secret")
    env = settings_env(load_settings(secrets_dir=folder))
    assert env["DLSTREAM_SECRETS_DIR"] == str(folder.resolve())
    assert not any("secret" in value for value in env.values() if value != str(folder.resolve()))
    # Without a folder the secrets travel in the environment, as before.
    plain = settings_env(load_settings(redis={"password": "redis-secret"}))
    assert plain["DLSTREAM_REDIS__PASSWORD"] == "redis-secret"


def _material(folder: Path) -> StackSecurity:
    """Identities written as ensure() writes them, without making certificates."""
    security = StackSecurity(folder)
    for identity in IDENTITIES:
        files = {"kafka__sasl_password": f"k-{identity}"}
        if REDIS_RIGHTS.get(identity):
            files["redis__password"] = f"r-{identity}"
        if identity in TRITON_CONTROLLERS:
            files["triton__control_key"] = "t-key"
        _secrets(security.secrets_dir(identity), **files)
    return security


def test_each_identity_connects_over_tls_with_its_own_user_and_folder(tmp_path: Path) -> None:
    security = _material(tmp_path / "secure")
    drift = security.apply(load_settings(), "drift")
    assert drift.kafka.security_protocol == "SASL_SSL"
    assert drift.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert drift.kafka.sasl_username == "drift"
    assert drift.kafka.ssl_cafile == security.ca_path
    assert drift.redis.tls
    assert drift.redis.username == "drift"
    assert drift.secrets_dir == security.secrets_dir("drift")
    worker = security.apply(load_settings(), "inference")
    assert worker.redis.username is None
    assert worker.redis.password is None
    # Only the identities that load models hold the key of Triton's control API; the worker only infers.
    assert drift.triton.control_headers("http") == {"dlstream-control-key": "t-key"}
    assert drift.triton.control_headers("grpc") == {"triton-grpc-protocol-dlstream-control-key": "t-key"}
    assert worker.triton.control_key is None
    assert worker.triton.control_headers("grpc") == {}
    assert security.apply(load_settings(), "client").triton.control_key is None
    # A child of the drift monitor (a retraining job) reads the key from its folder, not its environment.
    env = settings_env(drift)
    assert "t-key" not in env.values()
    assert load_settings(secrets_dir=drift.secrets_dir).triton.control_key is not None


def test_redis_users_are_limited_to_the_key_prefix_and_stored_as_hashes(tmp_path: Path) -> None:
    security = _material(tmp_path / "secure")
    lines = security.redis_acl_lines("dlstream:drift")
    assert lines[0] == "user default off"
    client = next(line for line in lines if line.startswith("user client "))
    assert f"#{hashlib.sha256(b'r-client').hexdigest()}" in client
    assert "~dlstream:drift:*" in client
    assert "+@read" in client
    assert "+@all" not in client
    assert not any("r-drift" in line for line in lines)
    assert {line.split()[1] for line in lines[1:]} == {"stack", "drift", "client"}
    scram = security.kafka_scram_arguments()
    assert len(scram) == len(IDENTITIES)
    assert "--add-scram=SCRAM-SHA-512=[name=broker,password=k-broker]" in scram


def test_kafka_refusals_are_named_and_other_failures_stay_transient() -> None:
    settings = load_settings(
        kafka={"bootstrap_servers": "127.0.0.1:1", "security_protocol": "SASL_SSL", "sasl_username": "bob"}
    )
    timeout = KafkaTimeoutError("Unable to bootstrap")
    refused = kafka_failure(settings.kafka, timeout, [SaslAuthenticationFailedError("bad")], "connecting")
    assert isinstance(refused, AccessDenied)
    assert "refused the credentials of user 'bob'" in str(refused)
    denied = kafka_failure(settings.kafka, TopicAuthorizationFailedError("t"), [], "reading")
    assert isinstance(denied, AccessDenied)
    assert "denied user 'bob' a right" in str(denied)
    # Nothing listens on port 1: no refusal, no TLS mismatch, a transient failure.
    unreachable = kafka_failure(settings.kafka, timeout, [], "connecting")
    assert isinstance(unreachable, TransientError)
    assert str(unreachable).startswith("connecting: ")


def test_redis_refusals_are_named_and_a_lost_connection_stays_transient() -> None:
    assert isinstance(redis_failure(AuthenticationError("WRONGPASS"), "Redis"), AccessDenied)
    assert isinstance(redis_failure(NoPermissionError("NOPERM"), "Redis"), AccessDenied)
    settings = load_settings(redis={"port": 1, "tls": True}).redis
    lost = redis_failure(RedisConnectionError("reset"), "Redis", settings)
    assert isinstance(lost, TransientError)
    assert str(lost) == "Redis: reset"


def test_each_kafka_identity_is_granted_only_what_its_service_uses() -> None:
    settings = load_settings(environment="test")
    t = settings.topics
    grants = kafka_grants(settings)
    allowed = {(g.principal, g.resource, g.name, g.operation, g.prefixed) for g in grants}
    assert len(allowed) == len(grants)

    def may(who: str, operation: str, topic: str) -> bool:
        return (who, "topic", topic, operation, False) in allowed or any(
            g.principal == who and g.prefixed and g.operation == operation and topic.startswith(g.name)
            for g in grants
            if g.resource == "topic"
        )

    assert may("inference", "read", t.image)
    assert may("inference", "write", t.prediction("audio"))
    assert may("inference", "write", t.dlq)
    assert not may("inference", "read", t.labels)
    assert not may("inference", "write", t.alerts)
    assert may("drift", "read", t.prediction("text"))
    assert may("drift", "read", t.labels)
    assert may("drift", "write", t.alerts)
    assert not may("drift", "write", t.prediction("text"))
    assert may("client", "write", t.text)
    assert may("client", "write", t.labels)
    assert may("client", "read", t.dlq)
    assert may("client", "read", t.alerts)
    assert not may("client", "write", t.prediction("image"))
    assert not may("client", "write", t.alerts)
    # Faust's own topics, named after the service's group, and that group; the client has no group.
    leader = f"{settings.inference.group_id}-__assignor-__leader"
    assert may("inference", "create", leader)
    assert not may("drift", "create", leader)
    groups = {(g.principal, g.name) for g in grants if g.resource == "group"}
    assert groups == {("inference", settings.inference.group_id), ("drift", settings.drift.group_id)}
    # Nobody is granted anything on the cluster (creating ACLs, deleting topics): that is the super users'.
    assert {g.resource for g in grants} == {"topic", "group"}
    assert "stack" in KAFKA_SUPER_USERS
    assert not any(g.principal == "stack" for g in grants)


def test_the_sasl_probe_encodes_a_handshake_and_reads_the_mechanisms_of_its_answer() -> None:
    request = sasl_handshake_request(7)
    size, api_key, version, correlation = struct.unpack_from(">ihhi", request)
    assert (size, api_key, version, correlation) == (len(request) - 4, 17, 1, 7)
    assert request.endswith(b"dlstream-probe")
    # correlation id, error 33 (unsupported mechanism), then the mechanisms the broker enables
    answer = struct.pack(">ihi", 7, 33, 2) + struct.pack(">h", 13) + b"SCRAM-SHA-512"
    answer += struct.pack(">h", 5) + b"PLAIN"
    assert sasl_handshake_mechanisms(answer, 7) == ["SCRAM-SHA-512", "PLAIN"]
    assert sasl_handshake_mechanisms(answer, 8) == []  # not the answer to this request
    assert sasl_handshake_mechanisms(answer[:12], 7) == []  # cut short
