"""The drift monitor (``dlstream drift run``) as a service of the local stack."""

from __future__ import annotations

import sys

from dlstream.runtime.launch import worker_env
from dlstream.runtime.net import http_ok
from dlstream.tools.stack.inference_worker import InferenceWorker


class DriftMonitorService(InferenceWorker):
    """The monitor over the prediction and label topics; it starts retraining jobs as local processes."""

    name = "drift"

    def ports(self) -> dict[str, tuple[str, int]]:
        d = self.settings.drift
        ports = {"web": (d.bind_host, d.web_port)}
        if d.metrics_port:
            ports["metrics"] = (d.bind_host, d.metrics_port)
        return ports

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "dlstream.cli", "drift", "run"]

    def env(self) -> dict[str, str]:
        env = worker_env(self.settings, repository=self.repository, data_dir=self.dir / "faust")
        env["DLSTREAM_DRIFT__DATA_DIR"] = str(self.dir / "faust")
        env["DLSTREAM_DRIFT__LOG_DIR"] = str(self.dir / "retrain")
        return env

    def healthy(self) -> bool:
        host, port = self.ports()["web"]
        return http_ok(host, port, "/health", timeout_s=2.0)
