"""The CustomResourceDefinitions the manifests of ``k8s/`` need, for the local control plane.

KEDA's and the Prometheus operator's are their real CRDs, read from their Go modules (the module zips carry
the repositories' YAML). Strimzi publishes its CRD files only with its GitHub releases, so they are generated
here the way Strimzi's own build generates them: its ``crd-generator`` run over the classes of its ``api``
artifact, both from Maven Central (cached under ``~/.cache/dlstream/k8s``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.k8s.cluster import CACHE, run

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
# The last Strimzi release whose crd-generator runs on Java 17 (1.x needs 21).
STRIMZI_VERSION = "0.45.0"
STRIMZI_KINDS = {
    "kafkas": "io.strimzi.api.kafka.model.kafka.Kafka",
    "kafkanodepools": "io.strimzi.api.kafka.model.nodepool.KafkaNodePool",
    "kafkatopics": "io.strimzi.api.kafka.model.topic.KafkaTopic",
}
_STRIMZI_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dlstream.k8s</groupId><artifactId>strimzi-crds</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>io.strimzi</groupId><artifactId>api</artifactId><version>{v}</version></dependency>
    <dependency><groupId>io.strimzi</groupId><artifactId>crd-generator</artifactId><version>{v}</version></dependency>
  </dependencies>
</project>
"""


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


def strimzi_crds() -> Path:
    """The folder of Strimzi's CRDs (``<plural>.yaml``), generated when missing."""
    folder = CACHE.parent / f"strimzi-{STRIMZI_VERSION}"
    if all((folder / f"{plural}.yaml").exists() for plural in STRIMZI_KINDS):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    pom = folder / "pom.xml"
    pom.write_text(_STRIMZI_POM.format(v=STRIMZI_VERSION))
    lib = folder / "lib"
    run(
        ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={lib}"],
        timeout_s=900,
    )
    partial = {plural: folder / f"{plural}.partial.yaml" for plural in STRIMZI_KINDS}
    run(
        [
            "java", "-cp", f"{lib}/*", "io.strimzi.crdgenerator.CrdGenerator",
            "--yaml", "--crd-api-version", "v1", "--api-versions", "v1beta2", "--storage-version", "v1beta2",
            "--label", "strimzi.io/crd-install:true",
            *(f"{STRIMZI_KINDS[plural]}={path}" for plural, path in partial.items()),
        ],
        timeout_s=600,
    )  # fmt: skip
    for plural, path in partial.items():
        path.rename(folder / f"{plural}.yaml")
    return folder


def all_crds() -> list[dict[str, Any]]:
    """Every CRD the overlays use."""
    return [
        *_module_crds(*KEDA),
        *_module_crds(*PROMETHEUS),
        *(yaml.safe_load((strimzi_crds() / f"{plural}.yaml").read_text()) for plural in STRIMZI_KINDS),
    ]
