"""The manifests of ``k8s/`` against a real API server: both overlays applied server-side, the Deployments
Available on kwok's nodes, the model-build Job Complete, and the drift monitor's identity allowed to create a
retraining Job from the shipped template and nothing the Role does not grant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dlstream.config.settings import load_settings
from dlstream.retrain.launchers import KubernetesLauncher
from tests.deploy.conftest import render
from tests.k8s.cluster import LocalCluster

pytestmark = pytest.mark.k8s

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = "dlstream-retrain-launcher"


def rendered(overlay: str, namespace: str) -> list[dict[str, Any]]:
    """``k8s/overlays/<overlay>`` as kustomize renders it, moved into ``namespace``."""
    objects = render(overlay)
    for obj in objects:
        if obj["kind"] == "Namespace":
            obj["metadata"]["name"] = namespace
        elif "namespace" in obj["metadata"]:
            obj["metadata"]["namespace"] = namespace
        for subject in obj.get("subjects", []):
            subject["namespace"] = namespace
    return objects


def provision_volumes(cluster: LocalCluster, namespace: str) -> None:
    """A volume bound to each claim of ``namespace``, as a storage provisioner would make (none runs here)."""
    claims = json.loads(cluster.kubectl("-n", namespace, "get", "pvc", "-o", "json").stdout)["items"]
    volumes = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{namespace}-{claim['metadata']['name']}"},
            "spec": {
                "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
                "accessModes": claim["spec"]["accessModes"],
                "hostPath": {"path": f"/tmp/{namespace}-{claim['metadata']['name']}"},
                "claimRef": {"namespace": namespace, "name": claim["metadata"]["name"]},
            },
        }
        for claim in claims
        if claim["status"].get("phase") != "Bound"
    ]
    if volumes:
        apply(cluster, volumes)


def apply(cluster: LocalCluster, objects: list[dict[str, Any]]) -> str:
    """Server-side apply of ``objects`` as the admin; the output of kubectl."""
    listing = {"apiVersion": "v1", "kind": "List", "items": objects}
    return cluster.kubectl(
        "apply", "--server-side", "--field-manager=dlstream-tests", "-f", "-", stdin=json.dumps(listing)
    ).stdout


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_overlay_applies_server_side_and_its_workloads_run(cluster: LocalCluster, overlay: str) -> None:
    namespace = f"dlstream-{overlay}"
    objects = rendered(overlay, namespace)
    namespaced = [o for o in objects if o["kind"] != "Namespace"]
    apply(cluster, [o for o in objects if o["kind"] == "Namespace"])
    if not any(o["kind"] == "Secret" for o in objects):  # gpu: the Secrets come from the user's store
        for secret, literal in (
            ("dlstream-secrets", "redis-password=x"),
            ("dlstream-triton-control", "control-key=y"),
        ):
            cluster.kubectl(
                "-n", namespace, "create", "secret", "generic", secret, f"--from-literal={literal}"
            )
    output = apply(cluster, namespaced)
    assert output.count("serverside-applied") == len(namespaced), output
    # The StatefulSet's claims appear once its controller made them.
    statefulsets = [o["metadata"]["name"] for o in objects if o["kind"] == "StatefulSet"]
    for name in statefulsets:
        cluster.kubectl("-n", namespace, "wait", "--for=create", f"pvc/data-{name}-0", "--timeout=120s")
    provision_volumes(cluster, namespace)

    # Applied again unchanged: server-side apply is idempotent, nothing conflicts.
    assert "conflict" not in apply(cluster, namespaced).lower()
    cluster.kubectl(
        "-n", namespace, "wait", "--for=condition=Available", "deployment", "--all", "--timeout=240s"
    )
    jobs = [o["metadata"]["name"] for o in objects if o["kind"] == "Job"]
    assert jobs, "the overlay has no model-build Job"
    for job in jobs:
        cluster.kubectl("-n", namespace, "wait", "--for=condition=Complete", f"job/{job}", "--timeout=240s")
    ready = json.loads(cluster.kubectl("-n", namespace, "get", "deployments", "-o", "json").stdout)
    for deployment in ready["items"]:
        available = deployment["status"].get("availableReplicas")
        assert available == deployment["spec"]["replicas"], deployment["metadata"]["name"]
    # As the API server keeps them: Triton's control API needs the key, which only the pods that load
    # models reference; every container runs as non-root on a read-only root filesystem.
    for deployment in ready["items"]:
        name, pod = deployment["metadata"]["name"], deployment["spec"]["template"]["spec"]
        holds_key = "dlstream-triton-control" in json.dumps(pod)
        assert holds_key == (name in ("triton", "drift")), name
        for container in pod["containers"]:
            security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, name
            assert security.get("readOnlyRootFilesystem") is True, name
        if name == "triton":
            restricted = (
                "model-repository,shared-memory,logging,trace:dlstream-control-key=$(TRITON_CONTROL_KEY)"
            )
            assert f"--http-restricted-api={restricted}" in pod["containers"][0]["args"]
            assert f"--grpc-restricted-protocol={restricted}" in pod["containers"][0]["args"]
    triton = ("-n", namespace, "get", "pods", "-l", "app.kubernetes.io/name=triton", "-o", "json")
    pods = json.loads(cluster.kubectl(*triton).stdout)["items"]
    on_gpu_nodes = {p["spec"]["nodeName"] in cluster.gpu_nodes for p in pods}
    assert on_gpu_nodes == {overlay == "gpu"}, [p["spec"]["nodeName"] for p in pods]


def test_the_drift_identity_creates_a_retraining_job_and_nothing_else(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    namespace = "dlstream-rbac"
    objects = [
        o
        for o in rendered("cpu", namespace)
        if o["kind"] in ("Namespace", "ServiceAccount", "Role", "RoleBinding", "Deployment")
    ]
    apply(cluster, [o for o in objects if o["kind"] == "Namespace"])
    apply(cluster, [o for o in objects if o["kind"] != "Namespace"])
    token = cluster.kubectl("-n", namespace, "create", "token", LAUNCHER, "--duration=10m").stdout.strip()

    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = cluster.server
    configuration.ssl_ca_cert = str(cluster.dir / "pki" / "ca.pem")
    configuration.api_key = {"authorization": f"Bearer {token}"}
    batch = client.BatchV1Api(client.ApiClient(configuration))
    settings = load_settings(
        drift={"namespace": namespace, "job_template": PROJECT_ROOT / "k8s/base/retrain/job-template.yaml"}
    )
    handle = KubernetesLauncher(settings, batch).launch("digits", "alert-1")
    name = handle.rpartition("/")[2]
    job = json.loads(cluster.kubectl("-n", namespace, "get", "job", name, "-o", "json").stdout)
    assert job["metadata"]["labels"]["dlstream.io/model"] == "digits"
    assert job["metadata"]["annotations"]["dlstream.io/alert-id"] == "alert-1"

    deployment = next(o["metadata"]["name"] for o in objects if o["kind"] == "Deployment")
    refused = {
        "delete a Deployment": ("delete", "deployment", deployment),
        "read Secrets": ("get", "secrets"),
        "create a Pod": ("run", "intruder", "--image=busybox", "--restart=Never"),
    }
    for what, args in refused.items():
        result = cluster.kubectl("-n", namespace, *args, token=token, check=False)
        assert result.returncode != 0, what
        assert "(Forbidden)" in result.stderr, (what, result.stderr)


def test_strimzi_resources_are_held_to_strimzis_own_schema(cluster: LocalCluster) -> None:
    # A topic with a misspelt field and a count of the wrong type: refused by the API server, as by Strimzi's.
    topic = next(o for o in render("cpu") if o["kind"] == "KafkaTopic")
    topic["metadata"]["namespace"] = "default"
    topic["spec"] = {**topic["spec"], "partitions": "six", "replicationFactor": 1}
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": [topic]})
    refused = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", stdin=listing, check=False
    )
    assert refused.returncode != 0
    assert "spec.partitions" in refused.stderr, refused.stderr
    assert "replicationFactor" in refused.stderr, refused.stderr
