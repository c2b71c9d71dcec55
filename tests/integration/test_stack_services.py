"""The services of the session's stack (Redis, Triton, Kafka topics), through the real clients."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from dlstream.adapters.kafka.admin import KafkaAdmin
from dlstream.adapters.redis.connection import redis_client
from dlstream.config.settings import Settings

pytestmark = pytest.mark.integration


def test_redis_answers_with_password_and_pipelines(settings: Settings, unique_name: str) -> None:
    store = redis_client(settings.redis)
    try:
        store.ping()
        key = f"test:{unique_name}"
        pipe = store.raw.pipeline()
        pipe.hincrby(key, "count", 3)
        pipe.hincrby(key, "count", 4)
        pipe.expire(key, 60)
        pipe.execute()
        assert int(store.raw.hget(key, "count")) == 7
        assert 0 < store.raw.ttl(key) <= 60
        store.raw.delete(key)
    finally:
        store.close()


def test_redis_refuses_a_client_without_the_password(settings: Settings) -> None:
    if settings.redis.password is None:
        pytest.skip("the attached stack's Redis has no password")
    store = redis_client(settings.redis.model_copy(update={"password": None}))
    try:
        assert not store.ping_ok()
    finally:
        store.close()


def test_triton_health_and_metadata_over_http(settings: Settings) -> None:
    client = httpclient.InferenceServerClient(settings.triton.http_url)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("healthcheck")
        meta = client.get_model_metadata("healthcheck")
        assert meta["name"] == "healthcheck"
        assert [i["name"] for i in meta["inputs"]] == ["PAYLOAD"]
        assert meta["inputs"][0]["datatype"] == "BYTES"
        assert [o["name"] for o in meta["outputs"]] == ["LENGTH"]
        config = client.get_model_config("healthcheck")
        assert config["max_batch_size"] == 64
        assert "dynamic_batching" in config
    finally:
        client.close()


def test_triton_health_metadata_and_inference_over_grpc(settings: Settings) -> None:
    client = grpcclient.InferenceServerClient(settings.triton.grpc_url)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        meta = client.get_model_metadata("healthcheck", as_json=True)
        assert meta["inputs"][0]["name"] == "PAYLOAD"
        assert meta["outputs"][0]["datatype"] == "INT64"
        payloads = [b"", b"a", "ünïcode".encode(), bytes(range(256)) * 4]
        tensor = grpcclient.InferInput("PAYLOAD", [len(payloads), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[p] for p in payloads], dtype=object))
        result = client.infer("healthcheck", [tensor])
        lengths = result.as_numpy("LENGTH")
        assert lengths is not None
        assert lengths[:, 0].tolist() == [len(p) for p in payloads]
    finally:
        client.close()


def test_triton_refuses_an_unknown_model_with_a_clear_error(settings: Settings) -> None:
    client = grpcclient.InferenceServerClient(settings.triton.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match="no-such-model"):
            client.get_model_metadata("no-such-model")
    finally:
        client.close()


def test_the_stack_created_every_contract_topic_with_the_configured_partitions(settings: Settings) -> None:
    admin = KafkaAdmin(settings.kafka)
    existing = admin.list_topics()
    for topic in settings.topics.all():
        assert topic in existing
        assert admin.partition_count(topic) == settings.kafka.partitions
