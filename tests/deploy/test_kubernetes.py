"""k8s/: every overlay renders, every object validates against its schema, and the security rules hold."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from prometheus_client.metrics import MetricWrapperBase

from dlstream.config.settings import InferenceSettings, TopicSettings
from dlstream.inference.metrics import InferenceMetrics
from dlstream.retrain.job_manifest import load_job_template, render_retrain_job
from tests.deploy.conftest import PROJECT_ROOT, is_custom, render, validate_custom

pytestmark = pytest.mark.deploy

KUBERNETES_VERSION = "1.31.0"
TEMPLATE = PROJECT_ROOT / "k8s" / "base" / "retrain" / "job-template.yaml"
Rendered = tuple[str, list[dict[str, Any]]]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload, and of the retraining Job the drift monitor would create."""
    specs = [
        (f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "Job")
    ]
    job = render_retrain_job(load_job_template(TEMPLATE), model="digits", alert_id="a1", namespace="dlstream")
    return [*specs, ("Job/retrain (template)", job["spec"]["template"]["spec"])]


def test_core_objects_validate_strictly_against_the_kubernetes_schemas(overlay: Rendered) -> None:
    _, objects = overlay
    core = [o for o in objects if not is_custom(o)]
    assert len(core) > 20
    for obj in core:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_custom_resources_validate_against_the_strimzi_keda_and_prometheus_operator_schemas(
    overlay: Rendered,
) -> None:
    _, objects = overlay
    custom = [o for o in objects if is_custom(o)]
    assert {o["kind"] for o in custom} == {
        "Kafka",
        "KafkaNodePool",
        "KafkaTopic",
        "ScaledObject",
        "TriggerAuthentication",
        "ServiceMonitor",
    }
    results = validate_custom(custom)
    assert len(results) == len(custom)
    assert [r for r in results if r["error"] is not None] == []


def test_the_validators_reject_broken_objects() -> None:
    deployment = by_kind(render("cpu"), "Deployment")["inference"]
    deployment["spec"]["replicass"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    topic = {
        "apiVersion": "kafka.strimzi.io/v1beta2",
        "kind": "KafkaTopic",
        "metadata": {"name": "broken"},
        "spec": {"partitions": "many"},
    }
    [result] = validate_custom([topic])
    assert "partitions" in result["error"]


def test_every_container_has_resources_probes_and_runs_as_non_root(overlay: Rendered) -> None:
    _, objects = overlay
    for where, spec in pod_specs(objects):
        pod_security = spec.get("securityContext", {})
        long_running = not where.startswith("Job/")
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            name = f"{where}/{container['name']}"
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{name}: {kind}"
            if long_running:
                assert "livenessProbe" in container, name
                assert "readinessProbe" in container, name
            security = {**pod_security, **container.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, name
            assert security.get("runAsUser", 0) != 0, name
            assert security.get("allowPrivilegeEscalation") is False, name
            assert security.get("capabilities", {}).get("drop") == ["ALL"], name
            assert security.get("readOnlyRootFilesystem") is True, name


def test_triton_has_a_startup_probe_and_a_gpu_only_in_the_gpu_overlay(overlay: Rendered) -> None:
    name, objects = overlay
    triton = by_kind(objects, "Deployment")["triton"]["spec"]["template"]["spec"]
    container = triton["containers"][0]
    assert "startupProbe" in container
    gpus = container["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpus == 1) if name == "gpu" else (gpus is None)
    assert ("--model-config-name=gpu" in container["args"]) == (name == "gpu")
    volumes = {v["name"]: v for v in triton["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "model-repo"


def test_only_triton_and_the_build_and_retrain_jobs_mount_the_model_repository(overlay: Rendered) -> None:
    _, objects = overlay
    job = render_retrain_job(load_job_template(TEMPLATE), model="digits", alert_id="a1", namespace="dlstream")
    pods = {
        f"Deployment/{n}": d["spec"]["template"]["spec"] for n, d in by_kind(objects, "Deployment").items()
    }
    pods |= {f"Job/{n}": j["spec"]["template"]["spec"] for n, j in by_kind(objects, "Job").items()}
    pods["Job/retrain (template)"] = job["spec"]["template"]["spec"]
    mounting = {
        name
        for name, pod in pods.items()
        if any(
            v.get("persistentVolumeClaim", {}).get("claimName") == "model-repo"
            for v in pod.get("volumes", [])
        )
    }
    assert mounting == {"Deployment/triton", "Job/model-build", "Job/retrain (template)"}
    build = by_kind(objects, "Job")["model-build"]["spec"]["template"]
    assert build["spec"]["containers"][0]["args"] == ["--publish"]
    assert build["metadata"]["labels"]["dlstream.io/redis-client"] == "true"
    config = by_kind(objects, "ConfigMap")
    settings = next(c for n, c in config.items() if n.startswith("dlstream-config"))["data"]
    replicas = by_kind(objects, "Service")["triton-replicas"]
    assert replicas["spec"]["clusterIP"] == "None"
    assert settings["DLSTREAM_TRITON__REPLICAS"] == f"dns:{replicas['metadata']['name']}:8000"


def test_tritons_control_api_needs_the_key_that_only_the_pods_that_load_models_get(
    overlay: Rendered,
) -> None:
    _, objects = overlay
    triton = by_kind(objects, "Deployment")["triton"]["spec"]["template"]["spec"]["containers"][0]
    restricted = "model-repository,shared-memory,logging,trace:dlstream-control-key=$(TRITON_CONTROL_KEY)"
    assert f"--http-restricted-api={restricted}" in triton["args"]
    assert f"--grpc-restricted-protocol={restricted}" in triton["args"]

    def holders(pod: dict[str, Any]) -> bool:
        text = json.dumps(pod)
        return "dlstream-triton-control" in text

    holding = {where for where, pod in pod_specs(objects) if holders(pod)}
    assert holding == {"Deployment/triton", "Deployment/drift", "Job/retrain (template)"}, holding
    for where, pod in pod_specs(objects):
        if where in holding - {"Deployment/triton"}:
            mounts = {m["name"]: m for c in pod["containers"] for m in c.get("volumeMounts", [])}
            env = {e["name"]: e.get("value") for c in pod["containers"] for e in c.get("env", [])}
            assert mounts["triton-control"]["readOnly"] is True
            assert env["DLSTREAM_SECRETS_DIR"] == mounts["triton-control"]["mountPath"]


def test_the_retrain_role_may_create_jobs_and_nothing_else(overlay: Rendered) -> None:
    _, objects = overlay
    assert by_kind(objects, "ClusterRole") == {}
    role = by_kind(objects, "Role")["dlstream-retrain-launcher"]
    assert role["rules"] == [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}]
    binding = by_kind(objects, "RoleBinding")["dlstream-retrain-launcher"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    drift = by_kind(objects, "Deployment")["drift"]["spec"]["template"]["spec"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": drift["serviceAccountName"], "namespace": "dlstream"}
    ]
    others = [d for name, d in by_kind(objects, "Deployment").items() if name != "drift"]
    assert all(d["spec"]["template"]["spec"].get("automountServiceAccountToken") is False for d in others)


def test_the_retrain_job_comes_from_the_template_that_k8s_ships(overlay: Rendered) -> None:
    _, objects = overlay
    [config_map] = [
        c for n, c in by_kind(objects, "ConfigMap").items() if n.startswith("retrain-job-template")
    ]
    assert config_map["data"] == {"job-template.yaml": TEMPLATE.read_text()}
    drift = by_kind(objects, "Deployment")["drift"]["spec"]["template"]["spec"]
    mounted = {v["name"]: v for v in drift["volumes"]}["retrain-template"]["configMap"]["name"]
    assert mounted == config_map["metadata"]["name"]
    env = {e["name"]: e.get("value") for e in drift["containers"][0]["env"]}
    mount = {m["name"]: m["mountPath"] for m in drift["containers"][0]["volumeMounts"]}["retrain-template"]
    assert Path(str(env["DLSTREAM_DRIFT__JOB_TEMPLATE"])) == Path(mount) / "job-template.yaml"

    job = render_retrain_job(
        load_job_template(TEMPLATE), model="speech_digits", alert_id="42", namespace="ml"
    )
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    assert job["metadata"]["generateName"] == "dlstream-retrain-speech-digits-"
    assert job["metadata"]["namespace"] == "ml"
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DLSTREAM_RETRAIN__MODEL"] == "speech_digits"


def test_keda_scales_the_workers_on_the_lag_of_their_consumer_group(overlay: Rendered) -> None:
    _, objects = overlay
    scaled = by_kind(objects, "ScaledObject")["inference"]
    assert scaled["spec"]["scaleTargetRef"]["name"] in by_kind(objects, "Deployment")
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == InferenceSettings().group_id
    assert scaled["spec"]["minReplicaCount"] >= 1


def test_every_contract_topic_is_a_kafka_topic_of_the_cluster(overlay: Rendered) -> None:
    _, objects = overlay
    topics = by_kind(objects, "KafkaTopic").values()
    assert sorted(t["spec"]["topicName"] for t in topics) == sorted(TopicSettings().all())
    [cluster] = by_kind(objects, "Kafka").values()
    assert all(t["metadata"]["labels"]["strimzi.io/cluster"] == cluster["metadata"]["name"] for t in topics)
    assert cluster["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"


def test_service_monitors_scrape_services_that_expose_metrics(overlay: Rendered) -> None:
    _, objects = overlay
    services = by_kind(objects, "Service")
    for monitor in by_kind(objects, "ServiceMonitor").values():
        selector = monitor["spec"]["selector"]["matchLabels"]
        matched = [s for s in services.values() if selector.items() <= s["metadata"]["labels"].items()]
        assert matched, monitor["metadata"]["name"]
        ports = {p["name"] for s in matched for p in s["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports


def test_the_dashboard_charts_metrics_the_workers_export(overlay: Rendered) -> None:
    _, objects = overlay
    [config_map] = [c for n, c in by_kind(objects, "ConfigMap").items() if n.startswith("dlstream-grafana")]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["dlstream.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(dlstream_[a-z_]+)", e)}
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    metrics = [m for m in vars(InferenceMetrics()).values() if isinstance(m, MetricWrapperBase)]
    exported = {
        f"{family.name}{suffix}"
        for metric in metrics
        for family in metric.describe()
        for suffix in suffixes[family.type]
    }
    worker_metrics = {m for m in used if not m.startswith(("dlstream_drift", "dlstream_retraining"))}
    assert worker_metrics <= exported, worker_metrics - exported
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("predictions", "dead letters", "drift", "retraining", "triton"):
        assert topic in titles
