"""The settings tree: environment mapping, secrets and production guards."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dlstream.config.docs import TABLE_BEGIN, TABLE_END, markdown_table, settings_rows
from dlstream.config.settings import Settings, TopicSettings, load_settings

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[2] / "README.md"


def test_nested_values_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLSTREAM_KAFKA__BOOTSTRAP_SERVERS", "broker-a:19092,broker-b:19092")
    monkeypatch.setenv("DLSTREAM_REDIS__PORT", "6380")
    monkeypatch.setenv("DLSTREAM_STACK__SERVICES", '["kafka", "redis"]')
    settings = load_settings()
    assert settings.kafka.first_host_port == ("broker-a", 19092)
    assert settings.redis.port == 6380
    assert settings.stack.services == ("kafka", "redis")


def test_secrets_never_show_in_repr_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLSTREAM_REDIS__PASSWORD", "hunter2-very-secret")
    settings = load_settings()
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in settings.model_dump_json()
    assert settings.redis.password is not None
    assert settings.redis.password.get_secret_value() == "hunter2-very-secret"


def test_production_refuses_missing_redis_password() -> None:
    with pytest.raises(ValidationError, match="DLSTREAM_REDIS__PASSWORD"):
        load_settings(environment="production", kafka={"security_protocol": "SASL_SSL"})


def test_production_refuses_plaintext_kafka() -> None:
    with pytest.raises(ValidationError, match="PLAINTEXT"):
        load_settings(environment="production", redis={"password": "s3cret"})


def test_production_with_secrets_is_accepted() -> None:
    settings = load_settings(
        environment="production", redis={"password": "s3cret"}, kafka={"security_protocol": "SASL_SSL"}
    )
    assert settings.environment == "production"


def test_unknown_settings_are_refused() -> None:
    with pytest.raises(ValidationError):
        load_settings(kafka={"bootstrap": "x:1"})


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.redis.port = 1  # type: ignore[misc]


def test_contract_topics_are_listed_once_each() -> None:
    topics = Settings().topics.all()
    assert len(topics) == len(set(topics)) == 9
    assert "predictions.image" in topics


def test_every_leaf_setting_has_a_description() -> None:
    rows = list(settings_rows())
    assert all(doc for _, _, _, doc in rows)
    assert all(var.startswith("DLSTREAM_") for var, *_ in rows)


def test_readme_configuration_table_matches_the_settings() -> None:
    text = README.read_text()
    start, end = text.index(TABLE_BEGIN), text.index(TABLE_END) + len(TABLE_END)
    assert text[start:end] == markdown_table(), "run `dlstream config docs` and paste it into the README"


def test_a_private_topic_set_renames_every_contract_topic_under_its_prefix() -> None:
    topics = TopicSettings().under("test.a1")
    assert topics.all() == [f"test.a1.{name}" for name in TopicSettings().all()]
