"""One local Kubernetes control plane for this tier (see :mod:`tests.k8s.cluster`), with fake nodes and the
CRDs the manifests use; stopped when the tier's last test ends, not at the end of the session, so that it does
not run beside the integration tests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.k8s.cluster import ClusterError, LocalCluster
from tests.k8s.crds import all_crds


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The running cluster: three kwok nodes, two of them with a GPU; KEDA, Prometheus and Strimzi CRDs."""
    local = LocalCluster(tmp_path_factory.mktemp("k8s"))
    try:
        local.up()
        local.add_nodes(3, gpu=2)
        crds = all_crds()
        listed = {"apiVersion": "v1", "kind": "List", "items": crds}
        local.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(listed))
        wait_established(local, [crd["metadata"]["name"] for crd in crds])
        yield local
    finally:
        local.down()


def wait_established(cluster: LocalCluster, names: list[str], timeout_s: float = 180.0) -> None:
    """Wait until the API server serves every CRD of ``names`` (``kubectl wait`` fails instead of waiting on a
    CRD it sees before the server has set any condition on it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        listed = json.loads(cluster.kubectl("get", "crd", "-o", "json").stdout)["items"]
        conditions = {
            crd["metadata"]["name"]: {c["type"]: c for c in (crd.get("status") or {}).get("conditions") or []}
            for crd in listed
        }
        refused = [
            f"{name}: {c['message']}"
            for name in names
            for c in conditions.get(name, {}).values()
            if (c["type"], c["status"]) in (("NonStructuralSchema", "True"), ("NamesAccepted", "False"))
        ]
        if refused:
            raise ClusterError(f"CRDs refused: {refused}")
        waiting = [n for n in names if conditions.get(n, {}).get("Established", {}).get("status") != "True"]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"CRDs not established after {timeout_s:.0f} s: {waiting}")
        time.sleep(0.5)
