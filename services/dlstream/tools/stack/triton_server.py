"""Triton Inference Server from the ``tritonserver`` binary inside PyPI's ``nvidia-pytriton`` wheel (CPU).

The wheel ships the server, the Python backend and one backend stub per Python version. The stub embeds an
isolated interpreter (it ignores PYTHONPATH) that finds its packages through the ``python3`` first on PATH, so
the venv's ``bin`` goes first on PATH and ``model.py`` imports this project through the venv's editable
install; the wheel's private shared libraries go on LD_LIBRARY_PATH.

Least privilege on one machine: Triton runs in a mount namespace of its own whose ``/dev/shm`` is a private
tmpfs (the Python backend makes its tensor regions 0644 whatever the umask, and another user could read
events from them in the shared ``/dev/shm``); started by root, it runs as ``stack.service_user``; with a
control key, its model-repository, shared-memory, logging and trace APIs answer only requests that carry it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import structlog

from dlstream.config.settings import Settings
from dlstream.domain.errors import StackError
from dlstream.runtime.net import http_ok
from dlstream.tools.stack.service import StackService

# The wheel's backend stub links the distribution's libpython (Debian: /usr/lib/x86_64-linux-gnu).
SYSTEM_PREFIX = "/usr"
SHARED_MEMORY = Path("/dev/shm")  # noqa: S108 - where shm_open keeps its regions; only names are read here
# Triton's restriction categories that make up its control plane; health, metadata, model config,
# statistics and inference stay open to the workers.
CONTROL_PROTOCOLS = ("model-repository", "shared-memory", "logging", "trace")
# In its own mount namespace, mount a private tmpfs on /dev/shm ($1: its options), then exec the rest.
_PRIVATE_SHM = 'mount -t tmpfs -o "$1" dlstream-shm /dev/shm && shift && exec "$@"'

log = structlog.get_logger(__name__)


def pytriton_root() -> Path:
    """The installed ``pytriton`` package folder."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("nvidia-pytriton is not installed; run `make setup` (pip extra `stack`)")
    return Path(next(iter(spec.submodule_search_locations)))


def loadable_models(repository: Path) -> list[str]:
    """Models of the repository that have a config and at least one non-empty numeric version folder."""
    names = []
    for model in sorted(p for p in repository.iterdir() if p.is_dir()):
        if not (model / "config.pbtxt").exists():
            continue
        versions = [v for v in model.iterdir() if v.is_dir() and v.name.isdigit() and any(v.iterdir())]
        if versions:
            names.append(model.name)
    return names


@functools.cache
def mount_namespace() -> list[str] | None:
    """The ``unshare`` command that gives a child a mount namespace of its own (in a user namespace when
    this process is not root); None when the kernel refuses it here."""
    if os.geteuid() == 0:
        command = ["unshare", "--mount", "--propagation", "private", "--"]
    else:
        command = ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private", "--"]
    try:
        probe = subprocess.run([*command, "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return command if probe.returncode == 0 else None


class TritonServer(StackService):
    """One tritonserver process in explicit model-control mode."""

    name = "triton"
    # Triton's handler of a fatal signal prints this, then exits; the Python backend's intermittent crash
    # (boost::interprocess::lock_exception in ModelInstanceExecute) can leave it hung in that exit, the
    # process alive and some models no longer answering. SIGTERM's "Signal (15)" is a normal stop.
    crash_line = re.compile(r"^Signal \((4|6|7|8|11)\) received\.")

    def __init__(
        self, run_dir: Path, settings: Settings, *, repository: Path, control_key: str | None = None
    ) -> None:
        super().__init__(run_dir)
        self.settings = settings
        self.repository = repository
        self.control_key = control_key
        self.service_user = settings.stack.service_user

    @property
    def shm_prefix(self) -> str:
        """The names of this stack's Python-backend shared-memory regions begin with this, so those a
        killed Triton leaves in /dev/shm are found and removed, and never taken for another stack's."""
        digest = hashlib.sha256(str(self.dir.resolve()).encode()).hexdigest()[:12]
        return f"dlstream_{digest}_"

    def ports(self) -> dict[str, tuple[str, int]]:
        t = self.settings.triton
        return {
            "http": (t.host, t.http_port),
            "grpc": (t.host, t.grpc_port),
            "metrics": (t.host, t.metrics_port),
        }

    def install(self) -> None:
        root = pytriton_root()
        binary = root / "tritonserver" / "bin" / "tritonserver"
        if not binary.exists():
            raise StackError(f"{binary} is missing from the nvidia-pytriton wheel")
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.exists():
            raise StackError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
        if sys.base_prefix != SYSTEM_PREFIX:
            raise StackError(
                f"this venv is built on the Python in {sys.base_prefix}, but the Triton backend stub links "
                f"the system libpython{version} of {SYSTEM_PREFIX}; rebuild the venv with "
                f"{SYSTEM_PREFIX}/bin/python{version} (make setup does)"
            )

    @property
    def _backends(self) -> Path:
        return self.dir / "backends"

    def prepare(self) -> None:
        self.install()
        self._remove_shm_regions()  # those of a Triton that was killed or crashed
        if not self.repository.is_dir():
            raise StackError(f"model repository {self.repository} does not exist")
        self.check_reachable(self.repository, pytriton_root(), Path(sys.prefix))
        root = pytriton_root() / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        python_backend = self._backends / "python"
        if python_backend.exists():
            shutil.rmtree(python_backend)
        shutil.copytree(
            root / "backends" / "python",
            python_backend,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        shutil.copy2(
            root / "python_backend_stubs" / version / "triton_python_backend_stub",
            python_backend / "triton_python_backend_stub",
        )

    def secret_arguments(self) -> list[str]:
        """The control key: Triton takes it only on its command line."""
        return [self.control_key] if self.control_key else []

    def argv(self) -> list[str]:
        return self._isolated(self._server_argv())

    def _isolated(self, server: list[str]) -> list[str]:
        """``server`` in a mount namespace with a private ``/dev/shm``, as the service user if any."""
        namespace = mount_namespace()
        if namespace is None:
            log.warning(
                "stack.shared_dev_shm",
                hint="this kernel gives no mount namespace to this user; Triton's Python backend regions "
                "are in the shared /dev/shm",
            )
            return self.as_service_user(server)
        options = "mode=0700"
        if self.run_as is not None:
            uid, gid = self.run_as
            options += f",uid={uid},gid={gid}"
        return [*namespace, "sh", "-c", _PRIVATE_SHM, "tritonserver", options, *self.as_service_user(server)]

    def _server_argv(self) -> list[str]:
        t = self.settings.triton
        binary = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
        argv = [
            str(binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self._backends}",
            "--model-control-mode=explicit",
            f"--http-address={t.host}",
            f"--http-port={t.http_port}",
            f"--grpc-address={t.host}",
            f"--grpc-port={t.grpc_port}",
            f"--metrics-address={t.host}",
            f"--metrics-port={t.metrics_port}",
            "--allow-cpu-metrics=true",
            "--strict-readiness=true",
            "--exit-timeout-secs=10",
            "--log-verbose=0",
            # Every config is complete (the build writes it, models add requires its inputs and outputs);
            # auto-completion would start one more backend stub per model load only to read the config.
            "--disable-auto-complete-config",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]
        if self.control_key:
            restricted = f"{','.join(CONTROL_PROTOCOLS)}:{t.control_header}={self.control_key}"
            argv += [f"--http-restricted-api={restricted}", f"--grpc-restricted-protocol={restricted}"]
        argv += [f"--load-model={name}" for name in loadable_models(self.repository)]
        return argv

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
        libs = pytriton_root().parent / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [str(libs), env.get("LD_LIBRARY_PATH", "")] if p)
        # torch in the Python backend's stubs would take every core (spinning between batches) and starve the
        # worker and Kafka on the same machine; see the README's latency section.
        env["OMP_NUM_THREADS"] = str(self.settings.triton.model_threads())
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        return self.service_env(env)

    def after_stop(self) -> None:
        self._remove_shm_regions()

    def _remove_shm_regions(self) -> None:
        for region in SHARED_MEMORY.glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)

    def healthy(self) -> bool:
        t = self.settings.triton
        return http_ok(t.host, t.http_port, "/v2/health/ready", timeout_s=1.0)
