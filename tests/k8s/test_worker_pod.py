"""The worker image, built here with podman from a local Debian base, run as a real ``hostNetwork`` pod under
the kubelet and containerd against a local Kafka and Triton: 100 events in, 100 predictions out."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from dlstream.adapters.kafka.admin import KafkaAdmin
from dlstream.config.settings import Settings, settings_env
from dlstream.domain.contract import Modality
from tests.integration.conftest import STARTED, TopicFactory, partial_stack
from tests.integration.workers import (
    deployment_settings,
    held_out_events,
    send_and_flush,
    wait_for_predictions,
)
from tests.k8s.cluster import LocalCluster
from tests.k8s.node import NODE_NAME, RealNode, build_images, running_node

pytestmark = pytest.mark.k8s

EVENTS = 100


@pytest.fixture(scope="module")
def kafka_and_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The integration tier's session stack when it runs in this session too (it started in the background
    as this tier began, and starting Kafka and Triton again beside it costs about 25 CPU seconds); else Kafka
    and Triton of this module on free ports, Triton serving only the model the pod's events name."""
    if STARTED:
        yield STARTED[0].ready().settings
        return
    with partial_stack(tmp_path_factory.mktemp("pod-stack"), ("kafka", "triton"), ("digits",)) as settings:
        yield settings


@pytest.fixture(scope="module")
def node(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RealNode, str]]:
    """A real node with the worker image in its runtime; the image's tag."""
    images = build_images()
    with running_node(cluster, tmp_path_factory.mktemp("node"), images) as real:
        yield real, next(tag for tag in images if "dlstream" in tag)


@pytest.mark.timeout(1200)  # the images are built here when `cluster build` has not built them
def test_a_worker_pod_from_the_image_built_here_predicts_100_events(
    cluster: LocalCluster, node: tuple[RealNode, str], kafka_and_triton: Settings
) -> None:
    _, image = node
    topics = TopicFactory(KafkaAdmin(kafka_and_triton.kafka), "test.pod")
    deployed = deployment_settings(kafka_and_triton, topics, "test.pod.group")
    env = settings_env(deployed)
    env.pop("DLSTREAM_INFERENCE__DATA_DIR", None)  # the image's own, writable for its user
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "worker", "namespace": "default"},
        "spec": {
            "nodeName": NODE_NAME,
            "hostNetwork": True,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "worker",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
                }
            ],
        },
    }
    try:
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
        cluster.kubectl("wait", "--for=condition=Ready", "pod/worker", "--timeout=300s")
        samples = held_out_events(Modality.IMAGE, EVENTS, source="tests/k8s-pod")
        send_and_flush(deployed, samples)
        ids = {s.event.id for s in samples}
        predictions = wait_for_predictions(deployed, ids, idle_timeout_s=120)
        assert set(predictions) == ids
        assert {p.data.model for p in predictions.values()} == {"digits"}
    except BaseException:
        print(cluster.kubectl("logs", "worker", "--tail=50", check=False).stdout)
        raise
    finally:
        cluster.kubectl("delete", "pod", "worker", "--wait=true", "--timeout=120s", check=False)
        topics.cleanup()
