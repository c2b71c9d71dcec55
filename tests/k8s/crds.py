"""The CustomResourceDefinitions the manifests of ``k8s/`` need, for the local control plane.

KEDA's and the Prometheus operator's are their real CRDs, read from their Go modules (the module zips carry
the repositories' YAML). Strimzi publishes no CRD file to a package registry reachable here, so its three
kinds get CRDs with the real group, versions, names and scope and a schema that keeps unknown fields; their
contents are validated offline against Strimzi's schemas (``tests/deploy``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

KEDA = (
    "github.com/kedacore/keda/v2",
    "v2.18.0",
    "config/crd/bases",
    ("scaledobjects", "triggerauthentications"),
)
PROMETHEUS = (
    "github.com/prometheus-operator/prometheus-operator",
    "v0.85.0",
    "example/prometheus-operator-crd",
    ("servicemonitors",),
)
STRIMZI_KINDS = (("Kafka", "kafkas"), ("KafkaNodePool", "kafkanodepools"), ("KafkaTopic", "kafkatopics"))


def _module_dir(module: str, version: str) -> Path:
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return Path(json.loads(result.stdout)["Dir"])


def _module_crds(module: str, version: str, folder: str, plurals: tuple[str, ...]) -> list[dict[str, Any]]:
    base = _module_dir(module, version) / folder
    crds = []
    for plural in plurals:
        (path,) = base.glob(f"*_{plural}.yaml")
        crds.append(yaml.safe_load(path.read_text()))
    return crds


def _strimzi_crd(kind: str, plural: str) -> dict[str, Any]:
    schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kafka.strimzi.io"},
        "spec": {
            "group": "kafka.strimzi.io",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower()},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1beta2",
                    "served": True,
                    "storage": True,
                    "schema": schema,
                    "subresources": {"status": {}},
                }
            ],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    """Every CRD the overlays use."""
    return [
        *_module_crds(*KEDA),
        *_module_crds(*PROMETHEUS),
        *(_strimzi_crd(kind, plural) for kind, plural in STRIMZI_KINDS),
    ]
