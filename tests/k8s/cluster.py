"""A local Kubernetes control plane for the ``tests/k8s`` tier: etcd, kube-apiserver (RBAC, token auth),
kube-controller-manager, kube-scheduler and kwok's fake nodes, all on 127.0.0.1, as child processes recorded
by pid (never found by name).

The Kubernetes binaries are built once from the Go module proxy into ``~/.cache/dlstream/k8s/<version>/bin``
(a wrapper module that requires ``k8s.io/kubernetes`` and points each ``k8s.io/*`` staging module at its
published ``v0.x`` release; a plain ``go install`` refuses k8s.io/kubernetes's own replace directives); etcd
from the same module, at the version k8s.io/kubernetes requires; kwok from ``go install``.

etcd is not Debian's ``etcd-server``: its 3.4.23 cannot answer the watch-progress requests that client-go's
streamed watch lists need, so kwok's informers had every watch end at once and saw pod changes only at their
re-lists, up to tens of seconds apart (a job's completion, a deployment's pods going ready).

    python -m tests.k8s.cluster build     # binaries, Strimzi's CRDs and images (7 to 18 minutes cold)
    python -m tests.k8s.cluster up DIR    # a cluster in DIR; prints the kubeconfig's path
    python -m tests.k8s.cluster down DIR
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dlstream.runtime.net import free_ports, port_open
from dlstream.tools.stack.process import ProcessGroup, ProcessRecord, is_running
from dlstream.tools.stack.security import issue_certificates
from tests.deploy.conftest import kubectl

K8S_VERSION = "v1.36.3"
STAGING_VERSION = "v0.36.3"
KWOK_VERSION = "v0.7.0"
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet")
ETCD_MAIN = """package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""
SERVICE_RANGE = "10.96.0.0/16"
ADMIN_GROUP = "system:masters"
CACHE = Path.home() / ".cache" / "dlstream" / "k8s" / K8S_VERSION
FAKE_NODE = "kwok.x-k8s.io/node"


class ClusterError(RuntimeError):
    """The cluster could not be built, started or checked."""


def run(argv: list[str], *, cwd: Path | None = None, timeout_s: float = 3600) -> str:
    """Run ``argv``; its stdout, or :class:`ClusterError` with the end of its stderr."""
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0:
        raise ClusterError(f"{' '.join(argv[:3])} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


def bin_dir() -> Path:
    """Where the built binaries live."""
    return CACHE / "bin"


def build_binaries() -> Path:
    """Build kube-apiserver, kube-controller-manager, kube-scheduler, the kubelet, etcd and kwok unless they
    are there."""
    target = bin_dir()
    if shutil.which("go") is None:
        raise ClusterError("Go is not installed")
    missing = [c for c in COMPONENTS if not (target / c).exists()]
    etcd_missing = not (target / "etcd").exists()
    if missing or etcd_missing:
        source = CACHE / "src"
        source.mkdir(parents=True, exist_ok=True)
        info = json.loads(run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{K8S_VERSION}"]))
        staging = sorted(
            line.split()[0]
            for line in Path(info["GoMod"]).read_text().splitlines()
            if "=> ./staging/" in line
        )
        replaces = "\n".join(f"\t{m} => {m} {STAGING_VERSION}" for m in staging)
        (source / "go.mod").write_text(
            f"module dlstream.local/k8sbin\n\ngo 1.26\n\nrequire k8s.io/kubernetes {K8S_VERSION}\n\n"
            f"replace (\n{replaces}\n)\n"
        )
        imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{c}"' for c in COMPONENTS)
        (source / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")
        (source / "etcd").mkdir(exist_ok=True)
        (source / "etcd" / "main.go").write_text(ETCD_MAIN)
        run(["go", "mod", "tidy"], cwd=source)
        target.mkdir(parents=True, exist_ok=True)
        if missing:
            cmds = [f"k8s.io/kubernetes/cmd/{c}" for c in missing]
            run(["go", "build", "-o", f"{target}/", *cmds], cwd=source)
        if etcd_missing:
            run(["go", "build", "-o", str(target / "etcd"), "./etcd"], cwd=source)
    if not (target / "kwok").exists():
        env_argv = ["env", f"GOBIN={target}", "go", "install", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"]
        run(env_argv)
    return target


class LocalCluster:
    """One control plane in ``folder``: start with :meth:`up`, stop with :meth:`down`."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder.resolve()
        self.processes = ProcessGroup()
        self.gpu_nodes: set[str] = set()

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig (token of the ``system:masters`` group)."""
        return self.dir / "admin.kubeconfig"

    @property
    def _state(self) -> Path:
        return self.dir / "cluster.json"

    def state(self) -> dict[str, Any]:
        """Ports and tokens of the running cluster."""
        data: dict[str, Any] = json.loads(self._state.read_text())
        return data

    @property
    def server(self) -> str:
        """The API server's URL."""
        return f"https://127.0.0.1:{self.state()['ports']['apiserver']}"

    def _pki(self) -> None:
        pki = self.dir / "pki"
        if (pki / "server.pem").exists():
            return
        pki.mkdir(parents=True, exist_ok=True)
        names = (
            "127.0.0.1",
            "10.96.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
        )
        issue_certificates(pki, names, ca_name="dlstream-test-ca", days="30")
        run(["openssl", "genrsa", "-out", str(pki / "sa.key"), "2048"])

    def _write_config(self) -> dict[str, Any]:
        etcd, etcd_peer, apiserver, controller, scheduler, kwok = free_ports(6)
        token = secrets.token_hex(16)
        state = {
            "ports": {
                "etcd": etcd,
                "etcd_peer": etcd_peer,
                "apiserver": apiserver,
                "controller_manager": controller,
                "scheduler": scheduler,
                "kwok": kwok,
            },
            "admin_token": token,
        }
        tokens = self.dir / "tokens.csv"
        tokens.write_text(f'{token},admin,admin,"{ADMIN_GROUP}"\n')
        tokens.chmod(0o600)
        self._state.write_text(json.dumps(state))
        self._state.chmod(0o600)
        self.kubeconfig.write_text(
            kubeconfig_text(f"https://127.0.0.1:{apiserver}", self.dir / "pki" / "ca.pem", "admin", token)
        )
        self.kubeconfig.chmod(0o600)
        return state

    def _argv(self, name: str, state: dict[str, Any]) -> list[str]:
        ports, pki, bins = state["ports"], self.dir / "pki", bin_dir()
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        if name == "etcd":
            return [
                str(bins / "etcd"),
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
                f"--initial-cluster=default=http://127.0.0.1:{ports['etcd_peer']}",
                "--quota-backend-bytes=1073741824",
            ]
        if name == "kube-apiserver":
            return [
                str(bins / name),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--tls-cert-file={pki / 'server.pem'}",
                f"--tls-private-key-file={pki / 'server.key'}",
                f"--token-auth-file={self.dir / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-key-file={pki / 'sa.key'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_RANGE}",
                "--allow-privileged=true",
                "--kubelet-preferred-address-types=InternalIP",
                "--enable-priority-and-fairness=false",
            ]
        if name == "kube-controller-manager":
            return [
                str(bins / name),
                f"--kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['controller_manager']}",
                "--leader-elect=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.pem'}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_RANGE}",
                # nodelifecycle stays: it lifts the not-ready taint of a new node once kwok reports it Ready.
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-route,-service",
                # The tests make volumes for claims as a provisioner would; the binder's default pass every
                # 15 s left pods waiting for their claims for up to 30 s.
                "--pvclaimbinder-sync-period=1s",
            ]
        if name == "kube-scheduler":
            return [
                str(bins / name),
                f"--kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                "--leader-elect=false",
            ]
        if name == "kwok":
            return [
                str(bins / name),
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={FAKE_NODE}=fake",
                "--manage-nodes-with-label-selector=",
                "--manage-single-node=",
                "--cidr=10.0.0.0/24",
                "--node-ip=10.0.0.1",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{ports['kwok']}",
            ]
        raise ClusterError(f"unknown component {name}")

    def _record(self, name: str) -> Path:
        return self.dir / f"{name}.pid.json"

    def up(self, timeout_s: float = 300.0) -> None:
        """Start every component and wait until the API server is ready and the controllers run."""
        build_binaries()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._pki()
        state = self._write_config()
        order = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
        for name in order:
            record = self.processes.spawn(
                name, self._argv(name, state), env=dict(os.environ), cwd=self.dir,
                log_path=self.dir / "logs" / f"{name}.log",
            )  # fmt: skip
            record.save(self._record(name))
            if name == "etcd":
                self._wait(lambda: port_open("127.0.0.1", state["ports"]["etcd"]), "etcd", timeout_s)
            elif name == "kube-apiserver":
                self._wait(self._apiserver_ready, "the API server", timeout_s)

    def _apiserver_ready(self) -> bool:
        try:
            return self.kubectl("get", "--raw=/readyz", check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _wait(self, check: Any, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            for name in ("etcd", "kube-apiserver"):
                record = ProcessRecord.load(self._record(name))
                if record is not None and not is_running(record):
                    raise ClusterError(f"{name} exited; see {record.log_path}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{what} not ready after {timeout_s:.0f} s; see {self.dir / 'logs'}")
            time.sleep(0.5)

    def down(self, timeout_s: float = 20.0) -> None:
        """Stop every recorded component (reverse order)."""
        for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            record = ProcessRecord.load(self._record(name))
            if record is not None:
                self.processes.stop(record, timeout_s)
                self._record(name).unlink(missing_ok=True)

    def kubectl(
        self, *args: str, token: str | None = None, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl ARGS`` as the admin, or as the holder of ``token``."""
        argv = [kubectl(), f"--kubeconfig={self.kubeconfig}"]
        if token is not None:
            argv.append(f"--token={token}")
        result = subprocess.run(
            [*argv, *args], input=stdin, capture_output=True, text=True, timeout=600, check=False
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def add_nodes(self, count: int, *, gpu: int = 0) -> list[str]:
        """Fake nodes that kwok keeps Ready (and runs the pods of); ``gpu`` of them with one NVIDIA GPU."""
        nodes: list[dict[str, Any]] = []
        for index in range(count):
            name = f"kwok-node-{index}"
            has_gpu = index < gpu
            capacity = {"cpu": "32", "memory": "256Gi", "pods": "110"}
            labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"}
            if has_gpu:
                self.gpu_nodes.add(name)
                capacity["nvidia.com/gpu"] = "1"
                labels["nvidia.com/gpu.present"] = "true"
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": name, "annotations": {FAKE_NODE: "fake"}, "labels": labels},
                    "spec": {
                        "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}] if has_gpu else []
                    },
                    "status": {"allocatable": capacity, "capacity": capacity},
                }
            )
        self.kubectl(
            "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes})
        )
        return [f"kwok-node-{index}" for index in range(count)]


def kubeconfig_text(server: str, ca: Path, user: str, token: str) -> str:
    """A kubeconfig of one cluster, one token user and one context."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }
    )


def main(argv: list[str]) -> int:
    """``build``, ``up DIR`` or ``down DIR``."""
    if argv[:1] == ["build"]:
        from tests.k8s.crds import strimzi_crds
        from tests.k8s.node import build_images

        print(build_binaries())
        print(strimzi_crds())
        for tag, archive in build_images().items():
            print(tag, archive)
        return 0
    if len(argv) == 2 and argv[0] in ("up", "down"):
        cluster = LocalCluster(Path(argv[1]))
        if argv[0] == "up":
            cluster.up()
            print(cluster.kubeconfig)
        else:
            cluster.down()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
