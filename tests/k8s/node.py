"""A real node for the local control plane: containerd (Debian's) and the kubelet, running ``hostNetwork``
pods from images built here with podman.

The images: a Debian base made by ``mmdebstrap`` from Debian's archive (no registry base image is reachable),
the worker image built from ``docker/Dockerfile`` on it (target ``runtime``), and a pause image compiled from
Kubernetes's own ``pause.c``. They are cached under ``~/.cache/dlstream/k8s/images`` (the worker image by a
digest of what goes into it) and imported into containerd as OCI archives.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dlstream.runtime.net import free_ports
from dlstream.tools.stack.process import ProcessGroup, ProcessRecord, is_running
from tests.k8s.cluster import CACHE, K8S_VERSION, ClusterError, LocalCluster, bin_dir, run

IMAGES = CACHE.parent / "images"
BASE = "localhost/debian-python:bookworm"
PAUSE = "localhost/pause:3.10"
WORKER = "localhost/dlstream"
TRAINER = "localhost/dlstream-trainer"
NODE_NAME = "kubelet-node"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _podman_has(image: str) -> bool:
    return subprocess.run(["podman", "image", "exists", image], check=False).returncode == 0


def _worker_digest() -> str:
    digest = hashlib.sha256()
    files = [
        PROJECT_ROOT / "docker" / "Dockerfile",
        PROJECT_ROOT / "pyproject.toml",
        PROJECT_ROOT / "setup.py",
    ]
    for folder in ("services", "pipelines", "model_repo"):
        files += sorted(
            p for p in (PROJECT_ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )
    for path in files:
        parts = path.relative_to(PROJECT_ROOT).parts
        if parts[0] == "model_repo" and parts[1] != "healthcheck" and any(p.isdigit() for p in parts):
            continue  # built model versions are not in the image (.dockerignore)
        digest.update(str(path.relative_to(PROJECT_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def build_images() -> dict[str, Path]:
    """The pause and worker images as OCI archives (built when missing); their tags by archive."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    base_tar = IMAGES / "debian-python-bookworm.tar"
    if not base_tar.exists():
        partial = IMAGES / "debian-python-bookworm.partial.tar"  # mmdebstrap writes a tar for a .tar name
        run(
            [
                "mmdebstrap", "--variant=minbase",
                "--include=python3,python3-venv,python-is-python3,ca-certificates",
                "bookworm", str(partial), "http://deb.debian.org/debian",
            ]
        )  # fmt: skip
        partial.rename(base_tar)
    if not _podman_has(BASE):
        run(["podman", "import", str(base_tar), BASE])

    pause_tar = IMAGES / "pause-3.10.oci.tar"
    if not pause_tar.exists():
        source = json.loads(run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{K8S_VERSION}"]))[
            "Dir"
        ]
        root = IMAGES / "pause-root"
        root.mkdir(exist_ok=True)
        run(
            [
                "gcc",
                "-static",
                "-O2",
                "-DVERSION=3.10",
                "-o",
                str(root / "pause"),
                f"{source}/build/pause/linux/pause.c",
            ]
        )
        flat = IMAGES / "pause-root.tar"
        run(["tar", "-C", str(root), "-cf", str(flat), "."])
        run(["podman", "import", "--change", 'ENTRYPOINT ["/pause"]', str(flat), PAUSE])
        run(["podman", "save", "--format", "oci-archive", "-o", str(pause_tar), PAUSE])

    return {PAUSE: pause_tar, **_image(WORKER, "runtime", "dlstream")}


def build_trainer_image() -> dict[str, Path]:
    """The trainer image (target ``trainer``: the ``models`` extra, PyPI's CUDA torch, about 7 GB) as an OCI
    archive, built when missing; its tag. Not part of ``cluster build``: it takes 12 minutes and 14 GB."""
    build_images()  # its base
    return _image(TRAINER, "trainer", "trainer")


def _image(repository: str, target: str, prefix: str) -> dict[str, Path]:
    """The Dockerfile's ``target`` built on the Debian base as ``<repository>:<digest>`` and saved as
    ``<prefix>-<digest>.oci.tar`` unless that archive exists; older archives of ``prefix`` and their images
    removed. Its tag and archive."""
    digest = _worker_digest()
    tag, archive = f"{repository}:{digest}", IMAGES / f"{prefix}-{digest}.oci.tar"
    if archive.exists():
        return {tag: archive}
    # No intermediate images kept: each build of a changed tree would leave them behind.
    argv = ["podman", "build", "--isolation=chroot", "--layers=false", f"--build-arg=PYTHON_IMAGE={BASE}"]
    if HOST_CA.exists():  # a TLS-inspecting proxy's CA, if the host trusts one
        argv += [
            "-v",
            f"{HOST_CA.parent}:/etc/ssl/host-certs:ro",
            f"--build-arg=PIP_CERT=/etc/ssl/host-certs/{HOST_CA.name}",
        ]
    run([*argv, "-f", "docker/Dockerfile", "--target", target, "-t", tag, "."], cwd=PROJECT_ROOT)
    run(["podman", "save", "--format", "oci-archive", "-o", str(archive), tag])
    for stale in IMAGES.glob(f"{prefix}-*.oci.tar"):
        if stale != archive:
            stale.unlink()
            old = stale.name.removeprefix(f"{prefix}-").removesuffix(".oci.tar")
            subprocess.run(["podman", "rmi", f"{repository}:{old}"], capture_output=True, check=False)
    return {tag: archive}


class RealNode:
    """containerd and a kubelet registered as :data:`NODE_NAME` with ``cluster``."""

    def __init__(self, cluster: LocalCluster, folder: Path) -> None:
        self.cluster = cluster
        self.dir = folder.resolve()
        self.processes = ProcessGroup()
        self.records: list[ProcessRecord] = []

    @property
    def socket(self) -> Path:
        """containerd's socket."""
        return self.dir / "containerd.sock"

    def _containerd_config(self) -> Path:
        cni = self.dir / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        # Pods share the host's network; the runtime still wants a network configured to report itself ready.
        (cni / "10-loopback.conflist").write_text(
            '{"cniVersion": "1.0.0", "name": "loopback-only", "plugins": [{"type": "loopback"}]}'
        )
        config = run(["containerd", "config", "default"])
        replacements = {
            'root = "/var/lib/containerd"': f'root = "{self.dir / "containerd-root"}"',
            'state = "/run/containerd"': f'state = "{self.dir / "containerd-state"}"',
            'address = "/run/containerd/containerd.sock"': f'address = "{self.socket}"',
            "restrict_oom_score_adj = false": "restrict_oom_score_adj = true",
            'bin_dir = "/opt/cni/bin"': 'bin_dir = "/usr/lib/cni"',
            'conf_dir = "/etc/cni/net.d"': f'conf_dir = "{cni}"',
        }
        for old, new in replacements.items():
            if old not in config:
                raise ClusterError(f"containerd's default config has no {old!r}")
            config = config.replace(old, new)
        config = "\n".join(
            f'    sandbox_image = "{PAUSE}"' if line.strip().startswith("sandbox_image") else line
            for line in config.splitlines()
        )
        path = self.dir / "containerd.toml"
        path.write_text(config + "\n")
        return path

    def _kubelet_config(self) -> Path:
        port, healthz = free_ports(2)
        path = self.dir / "kubelet.yaml"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    # Bound to 127.0.0.1; the API server reaches it for logs without a client certificate.
                    "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
                    "authorization": {"mode": "AlwaysAllow"},
                    "address": "127.0.0.1",
                    "port": port,
                    "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": healthz,
                    "cgroupDriver": "cgroupfs",
                    "cgroupsPerQOS": False,
                    "enforceNodeAllocatable": [],
                    "failSwapOn": False,
                    "failCgroupV1": False,
                    "containerRuntimeEndpoint": f"unix://{self.socket}",
                    "evictionHard": {
                        "memory.available": "1%",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                    },
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "localStorageCapacityIsolation": False,
                }
            )
        )
        return path

    def _spawn(self, name: str, argv: list[str]) -> None:
        record = self.processes.spawn(
            name, argv, env=dict(os.environ), cwd=self.dir, log_path=self.dir / "logs" / f"{name}.log"
        )
        self.records.append(record)

    def up(self, images: dict[str, Path], timeout_s: float = 300.0) -> None:
        """Start containerd, import ``images`` into it, start the kubelet and wait until the node is Ready."""
        for tool in ("containerd", "ctr", "podman", "mmdebstrap"):
            if shutil.which(tool) is None:
                raise ClusterError(f"{tool} is not installed (`make setup`)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._spawn("containerd", ["containerd", f"--config={self._containerd_config()}"])
        deadline = time.monotonic() + timeout_s
        while not self.socket.exists():
            self._check_alive(deadline, "containerd's socket")
        for tag, archive in images.items():
            run(
                ["ctr", f"--address={self.socket}", "-n", "k8s.io", "images", "import",
                 f"--base-name={tag.rpartition(':')[0]}", str(archive)]
            )  # fmt: skip
        self._spawn(
            "kubelet",
            [
                str(bin_dir() / "kubelet"),
                f"--config={self._kubelet_config()}",
                f"--kubeconfig={self.cluster.kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                "--node-ip=127.0.0.1",
                f"--root-dir={self.dir / 'kubelet'}",
                f"--cert-dir={self.dir / 'kubelet-pki'}",
            ],
        )
        while not self._ready():
            self._check_alive(deadline, f"node {NODE_NAME} Ready")

    def _delete_containers(self) -> None:
        # Containers outlive the kubelet, and their shims (sessions of their own) outlive containerd: a pod
        # still running when a test ends (or is interrupted) would go on without either.
        ctr = ["ctr", f"--address={self.socket}", "-n", "k8s.io"]
        listed = subprocess.run(
            [*ctr, "tasks", "ls", "-q"], capture_output=True, text=True, timeout=60, check=False
        )
        for task in listed.stdout.split():
            subprocess.run(
                [*ctr, "tasks", "delete", "--force", task], capture_output=True, timeout=60, check=False
            )

    def _ready(self) -> bool:
        result = self.cluster.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if result.returncode != 0:
            return False
        conditions = json.loads(result.stdout)["status"].get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _check_alive(self, deadline: float, what: str) -> None:
        for record in self.records:
            if not is_running(record):
                raise ClusterError(f"{record.name} exited; see {record.log_path}")
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out waiting for {what}; see {self.dir / 'logs'}")
        time.sleep(0.5)

    def down(self, timeout_s: float = 30.0) -> None:
        """Stop the kubelet, delete the containers still running (their shims are not in containerd's process
        group), then stop containerd."""
        for record in reversed(self.records):
            if record.name == "containerd":
                self._delete_containers()
            self.processes.stop(record, timeout_s)
        self.records.clear()
        # The kubelet mounts its root folder (and pod volumes) and leaves the mounts behind when it stops.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        ours = [m for m in mounts if m == str(self.dir) or m.startswith(f"{self.dir}/")]
        for mount in sorted(ours, key=len, reverse=True):
            subprocess.run(["umount", "--lazy", mount], capture_output=True, check=False)


@contextmanager
def running_node(
    cluster: LocalCluster, folder: Path, images: dict[str, Path], timeout_s: float = 300.0
) -> Iterator[RealNode]:
    """A :class:`RealNode` with ``images``, up while the block runs, then stopped."""
    real = RealNode(cluster, folder)
    try:
        real.up(images, timeout_s)
        yield real
    finally:
        real.down()
