"""One inference worker (``dlstream inference run``) as a service of the local stack."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from services.common.settings import Settings, settings_env
from services.stack.service import StackService


class InferenceWorker(StackService):
    """A Faust worker over the request topics, healthy when its ``/health`` page answers 200."""

    name = "inference"

    def __init__(self, run_dir: Path, settings: Settings, *, repository: Path) -> None:
        super().__init__(run_dir)
        self.settings = settings
        self.repository = repository

    def ports(self) -> dict[str, tuple[str, int]]:
        i = self.settings.inference
        host = self.settings.triton.host
        ports = {"web": (host, i.web_port)}
        if i.metrics_port:
            ports["metrics"] = (host, i.metrics_port)
        return ports

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "services.cli", "inference", "run"]

    def env(self) -> dict[str, str]:
        # The worker runs in the stack's folder: every path it needs is made absolute here.
        env = {**os.environ, **settings_env(self.settings)}
        env["DLSTREAM_TRITON__MODEL_REPOSITORY"] = str(self.repository)
        env["DLSTREAM_INFERENCE__DATA_DIR"] = str(self.dir / "faust")
        return env

    def healthy(self) -> bool:
        host, port = self.ports()["web"]
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False
