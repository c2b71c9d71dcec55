"""How a worker process is launched: its command line and the environment that carries its settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dlstream.config.settings import Settings, settings_env


def worker_argv() -> list[str]:
    """The command line of an inference worker (``dlstream inference run`` with this interpreter)."""
    return [sys.executable, "-m", "dlstream.cli", "inference", "run"]


def worker_env(settings: Settings, *, repository: Path, data_dir: Path | None = None) -> dict[str, str]:
    """The environment of a child process (a worker, the monitor, a retraining job): this one plus
    ``settings``, with its paths made absolute."""
    env = {**os.environ, **settings_env(settings)}
    env["DLSTREAM_TRITON__MODEL_REPOSITORY"] = str(repository.resolve())
    if data_dir is not None:
        env["DLSTREAM_INFERENCE__DATA_DIR"] = str(data_dir.resolve())
    return env
