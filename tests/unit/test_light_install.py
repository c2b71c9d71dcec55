"""The installs without torch (the client, the ``worker`` and ``monitor`` extras): their modules must not
import what only the ``models`` and ``stack`` extras install."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dlstream.cli.main import EXTRA_OF_MODULE, missing_extra

pytestmark = pytest.mark.unit

# What `dlstream publish/subscribe/label/dlq`, `inference run` and `drift run/status/alerts/report` import.
BASE_MODULES = (
    "dlstream.cli.main",
    "dlstream.cli.client",
    "dlstream.cli.inference",
    "dlstream.cli.drift",
    "dlstream.client.publisher",
    "dlstream.client.subscriber",
    "dlstream.client.files",
    "dlstream.client.dlq",
    "dlstream.inference.app",
    "dlstream.inference.metrics",
    "dlstream.drift.app",
    "dlstream.drift.metrics",
    "dlstream.drift.status",
    "dlstream.drift.report",
    "dlstream.adapters.redis.drift_store",
    "dlstream.retrain.launchers",
)
MODELS_ONLY = sorted(
    {m for m, extra in EXTRA_OF_MODULE.items() if extra in ("models", "stack")}
    | {"services", "pipelines", "nvidia"}
)


@pytest.mark.slow(reason="imports the client, worker and monitor in fresh Pythons")
@pytest.mark.timeout(120)
def test_the_client_worker_and_monitor_import_nothing_of_the_models_extra() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(BASE_MODULES)!r}: importlib.import_module(name)\n"
        f"heavy = {MODELS_ONLY!r}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_a_command_that_needs_the_models_extra_says_how_to_install_it() -> None:
    message = missing_extra(ModuleNotFoundError("No module named 'torch'", name="torch"))
    assert message is not None
    assert "pip install 'dlstream[models]'" in message
    assert "torch" in message
    assert missing_extra(ModuleNotFoundError("No module named 'torch.nn'", name="torch.nn")) is not None
    kubernetes = missing_extra(ModuleNotFoundError("No module named 'kubernetes'", name="kubernetes"))
    assert kubernetes is not None
    assert "pip install 'dlstream[monitor]'" in kubernetes
    assert missing_extra(ModuleNotFoundError("No module named 'left_pad'", name="left_pad")) is None
    # A command group that cannot load names its role's extra, whichever of its modules is missing.
    stack = missing_extra(ModuleNotFoundError("No module named 'redis'", name="redis"), "stack")
    assert stack is not None
    assert "pip install 'dlstream[stack]'" in stack
