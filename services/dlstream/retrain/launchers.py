"""Starting a retraining job: a local process, or a Kubernetes Job rendered from the shipped template."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import structlog
from redis.exceptions import RedisError

from dlstream.adapters.redis.connection import sync_redis
from dlstream.config.settings import Settings
from dlstream.domain.errors import TransientError
from dlstream.retrain.job_manifest import load_job_template, render_retrain_job
from dlstream.runtime.launch import worker_env

log = structlog.get_logger("dlstream.retrain")


class Launcher(Protocol):
    """Starts retraining jobs and, where it can, tells when they ended."""

    def launch(self, model: str, alert_id: str) -> str:
        """Start a job retraining ``model`` for ``alert_id``; returns a handle naming the job."""

    def exit_code(self, handle: str) -> int | None:
        """The job's exit code once it has ended and this launcher knows it; None otherwise."""


class LocalLauncher:
    """``dlstream models retrain`` as a child process of the monitor (the local stack, docker-compose)."""

    def __init__(self, settings: Settings, *, repository: Path) -> None:
        self.settings = settings
        self.repository = repository
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    def launch(self, model: str, alert_id: str) -> str:
        """Start the process; its output goes to ``<log_dir>/<model>-<alert>.log``."""
        log_dir = self.settings.drift.log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **worker_env(self.settings, repository=self.repository),
            "DLSTREAM_RETRAIN__MODEL": model,
            "DLSTREAM_RETRAIN__ALERT_ID": alert_id,
        }
        with (log_dir / f"{model}-{alert_id}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "dlstream.cli", "models", "retrain"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        handle = f"pid:{process.pid}"
        self._processes[handle] = process
        return handle

    def exit_code(self, handle: str) -> int | None:
        """The child's exit code once it ended (it is reaped then)."""
        process = self._processes.get(handle)
        if process is None:
            return None
        code = process.poll()
        if code is not None:
            del self._processes[handle]
        return code

    def stop(self, timeout_s: float = 30.0) -> None:
        """Terminate jobs still running (the monitor is stopping); their locks expire or are released."""
        for process in self._processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self._processes.values():
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class KubernetesLauncher:
    """A Job created through the Kubernetes API from the template that k8s/ ships (one source of truth)."""

    def __init__(self, settings: Settings, batch_api: Any | None = None) -> None:
        self.template = load_job_template(settings.drift.job_template)
        self.namespace = settings.drift.namespace or os.environ.get("POD_NAMESPACE") or "default"
        self.batch_api: Any = batch_api if batch_api is not None else _batch_api()

    def launch(self, model: str, alert_id: str) -> str:
        """Create the Job; its generated name is the handle."""
        job = render_retrain_job(self.template, model=model, alert_id=alert_id, namespace=self.namespace)
        created = self.batch_api.create_namespaced_job(namespace=self.namespace, body=job)
        name = created["metadata"]["name"] if isinstance(created, dict) else created.metadata.name
        return f"job:{self.namespace}/{name}"

    def exit_code(self, handle: str) -> int | None:
        """Unknown here: the Job reports its outcome in Redis, and a crashed Job's lock expires."""
        return None


def _batch_api() -> Any:
    """The Batch API of the cluster this runs in (its ServiceAccount), or of the local kube config."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.BatchV1Api()


class QueueLauncher:
    """A request on a Redis list, served by ``dlstream models retrain-worker`` where the repository is
    mounted (docker-compose): the monitor itself never needs the repository."""

    def __init__(self, settings: Settings, client: Any | None = None) -> None:
        self.settings = settings
        self.client: Any = client if client is not None else sync_redis(settings.redis)

    def launch(self, model: str, alert_id: str) -> str:
        """Queue the request; the model and alert are the handle."""
        request = json.dumps({"model": model, "alert_id": alert_id, "queued_at": time.time()})
        try:
            self.client.rpush(retrain_queue_key(self.settings), request)
        except RedisError as exc:
            raise TransientError(f"Redis: {exc}") from exc
        return f"queue:{model}:{alert_id}"

    def exit_code(self, handle: str) -> int | None:
        """Unknown here: the job reports its outcome in Redis, and a crashed job's lock expires."""
        return None


def retrain_queue_key(settings: Settings) -> str:
    """The Redis list of retraining requests."""
    return f"{settings.drift.key_prefix}:retrain:queue"


def serve_retrain_queue(
    settings: Settings, *, repository: Path, stop: threading.Event, poll_s: float = 5.0
) -> int:
    """Run queued retraining requests one at a time, each as a child process like the local launcher's,
    until ``stop`` is set (the job in progress finishes first); returns how many ran."""
    client = sync_redis(settings.redis, timeout_s=poll_s + 5)
    local = LocalLauncher(settings, repository=repository)
    ran = 0
    try:
        while not stop.is_set():
            try:
                item = client.blpop([retrain_queue_key(settings)], timeout=poll_s)
            except RedisError as exc:
                log.warning("retrain_worker.redis", error=str(exc))
                stop.wait(poll_s)
                continue
            if item is None:
                continue
            request = json.loads(item[1])
            log.info("retrain_worker.start", model=request["model"], alert_id=request["alert_id"])
            handle = local.launch(request["model"], request["alert_id"])
            while (code := local.exit_code(handle)) is None:
                time.sleep(1.0)
            ran += 1
            log.info("retrain_worker.done", model=request["model"], exit_code=code)
    finally:
        client.close()
    return ran


def make_launcher(settings: Settings, *, repository: Path) -> Launcher | None:
    """The launcher the settings name (None: retraining disabled)."""
    if settings.drift.retrain_launcher == "local":
        return LocalLauncher(settings, repository=repository)
    if settings.drift.retrain_launcher == "kubernetes":
        return KubernetesLauncher(settings)
    if settings.drift.retrain_launcher == "queue":
        return QueueLauncher(settings)
    return None
