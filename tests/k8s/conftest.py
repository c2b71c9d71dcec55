"""One local Kubernetes control plane per test session (see :mod:`tests.k8s.cluster`), with fake nodes and
the CRDs the manifests use."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.k8s.cluster import LocalCluster
from tests.k8s.crds import all_crds

pytestmark = pytest.mark.k8s


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The running cluster: three kwok nodes, two of them with a GPU; KEDA, Prometheus and Strimzi CRDs."""
    local = LocalCluster(tmp_path_factory.mktemp("k8s"))
    try:
        local.up()
        local.add_nodes(3, gpu=2)
        crds = {"apiVersion": "v1", "kind": "List", "items": all_crds()}
        local.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(crds))
        local.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=120s")
        yield local
    finally:
        local.down()
