"""One inference worker (``dlstream inference run``) as a service of the local stack."""

from __future__ import annotations

from pathlib import Path

from dlstream.config.settings import Settings
from dlstream.runtime.launch import worker_argv, worker_env
from dlstream.runtime.net import http_ok
from dlstream.tools.stack.service import StackService


class InferenceWorker(StackService):
    """A Faust worker over the request topics, healthy when its ``/health`` page answers 200."""

    name = "inference"

    def __init__(self, run_dir: Path, settings: Settings, *, repository: Path) -> None:
        super().__init__(run_dir)
        self.settings = settings
        self.repository = repository

    def ports(self) -> dict[str, tuple[str, int]]:
        i = self.settings.inference
        host = i.bind_host
        ports = {"web": (host, i.web_port)}
        if i.metrics_port:
            ports["metrics"] = (host, i.metrics_port)
        return ports

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def argv(self) -> list[str]:
        return worker_argv()

    def env(self) -> dict[str, str]:
        return worker_env(self.settings, repository=self.repository, data_dir=self.dir / "faust")

    def healthy(self) -> bool:
        host, port = self.ports()["web"]
        return http_ok(host, port, "/health", timeout_s=2.0)
