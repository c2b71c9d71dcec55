"""The trainer image, built here with podman, run as the shipped model-build Job on a real node: the Job
Complete, the model version in the repository volume, its reference statistics in Redis.

Opt-in (``DLSTREAM_TEST_TRAINER_POD=1``): the image carries PyPI's CUDA torch (7 GB, 12 minutes to build here,
3.6 GB as an archive), too much for every run of the suite.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dlstream.adapters.redis.drift_store import with_store
from dlstream.config.settings import Settings
from tests.deploy.conftest import render
from tests.integration.conftest import partial_stack
from tests.k8s.cluster import LocalCluster
from tests.k8s.node import NODE_NAME, RealNode, build_images, build_trainer_image, running_node

MODEL = "text_topics"

pytestmark = [
    pytest.mark.k8s,
    pytest.mark.skipif(
        os.environ.get("DLSTREAM_TEST_TRAINER_POD") != "1", reason="opt-in: DLSTREAM_TEST_TRAINER_POD=1"
    ),
]


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A Redis of this module (the Job publishes the reference statistics there)."""
    with partial_stack(tmp_path_factory.mktemp("trainer-stack"), ("redis",)) as settings:
        yield settings


@pytest.fixture(scope="module")
def node(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RealNode, str]]:
    """A real node with the trainer image in its runtime; the image's tag."""
    trainer = build_trainer_image()
    images = {**build_images(), **trainer}
    with running_node(cluster, tmp_path_factory.mktemp("trainer-node"), images, timeout_s=1200) as real:
        yield real, next(iter(trainer))


def model_build_job(image: str, models: Path, settings: Settings) -> dict[str, Any]:
    """The overlay's model-build Job, for this node: its image, the repository volume a host folder, the
    Redis of the test (hostNetwork), one model, and requests that fit two cores."""
    job: dict[str, Any] = next(
        o for o in render("cpu") if o["kind"] == "Job" and o["metadata"]["name"] == "model-build"
    )
    job["metadata"]["namespace"] = "default"
    spec = job["spec"]["template"]["spec"]
    spec |= {"nodeName": NODE_NAME, "hostNetwork": True}
    (container,) = spec["containers"]
    container |= {"image": image, "imagePullPolicy": "Never", "args": ["--model", MODEL, "--publish"]}
    container.pop("envFrom", None)
    redis = settings.redis
    assert redis.password is not None
    container["env"] = [
        {"name": "DLSTREAM_REDIS__HOST", "value": redis.host},
        {"name": "DLSTREAM_REDIS__PORT", "value": str(redis.port)},
        {"name": "DLSTREAM_REDIS__PASSWORD", "value": redis.password.get_secret_value()},
        {"name": "DLSTREAM_DRIFT__KEY_PREFIX", "value": settings.drift.key_prefix},
    ]
    container["resources"] = {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "6Gi"}}
    spec["volumes"] = [
        {"name": "models", "hostPath": {"path": str(models), "type": "Directory"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    return job


@pytest.mark.timeout(3600)  # the image is built here when missing (12 minutes), then imported (3.6 GB)
def test_the_model_build_job_runs_the_trainer_image_on_a_real_node(
    cluster: LocalCluster, node: tuple[RealNode, str], redis: Settings, tmp_path: Path
) -> None:
    _, image = node
    models = tmp_path / "model-repo"
    models.mkdir()
    models.chmod(0o777)  # the Job runs as uid 10001
    # Keys of their own: the stack already published the references of the repository it was started with.
    redis = redis.model_copy(
        update={"drift": redis.drift.model_copy(update={"key_prefix": f"trainer-pod:{uuid.uuid4().hex}"})}
    )
    job = model_build_job(image, models, redis)
    began = time.monotonic()
    try:
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps(job))
        cluster.kubectl("wait", "--for=condition=Complete", "job/model-build", "--timeout=1500s")
    except BaseException:
        print(cluster.kubectl("logs", "job/model-build", "--tail=50", check=False).stdout)
        raise
    finally:
        took = time.monotonic() - began
        cluster.kubectl("delete", "job", "model-build", "--wait=true", "--timeout=120s", check=False)
    version = models / MODEL / "1"
    assert (models / MODEL / "config.pbtxt").exists()
    assert any(version.iterdir()), f"nothing built in {version}"
    assert (models / "healthcheck" / "config.pbtxt").exists()  # the committed configs copied in
    reference = with_store(redis, lambda store: store.reference(MODEL, "1"))
    assert reference, "no reference statistics published"
    print(f"model-build Job Complete in {took:.0f} s; {sorted(p.name for p in version.iterdir())}")
