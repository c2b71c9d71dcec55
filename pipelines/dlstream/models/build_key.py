"""The digest that names a build's inputs: the plugin's module, the sources of the model SDK and of the layers
below it, the installed distributions, the interpreter, the seed and the spec's declared data version (see
``build_cache``). Kept builds and kept training data are both named by it."""

from __future__ import annotations

import functools
import hashlib
import platform
from importlib import import_module
from importlib.metadata import distributions
from pathlib import Path

from dlstream.models.spec import ModelSpec

FORMAT = 1
SOURCE_PACKAGES = (
    "dlstream.models",
    "dlstream.domain",
    "dlstream.config",
    "dlstream.runtime",
    "dlstream.adapters",
)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def package_dir(package: str) -> Path:
    """The folder of an imported package (the first of a namespace package)."""
    return Path(next(iter(import_module(package).__path__))).resolve()


INSTALLERS = frozenset({"pip", "uv", "setuptools", "wheel"})
"""Distributions that install the others and take no part in a build: a venv made by another installer or
an upgraded pip restores the same builds."""


@functools.cache  # a process does not install distributions while it builds; the scan costs 0.2 s
def _installed() -> list[str]:
    found = {
        f"{d.metadata['Name']}=={d.version}"
        for d in distributions()
        if d.metadata["Name"] and d.metadata["Name"].lower() not in INSTALLERS
    }
    return sorted(found)


def build_key(spec: ModelSpec, module: str, *, seed: int) -> str:
    """The digest of a build of ``spec`` (defined in module ``module``) with ``seed``."""
    digest = hashlib.sha256()
    parts = [
        f"format={FORMAT}",
        f"model={spec.name}",
        f"seed={seed}",
        f"python={platform.python_version()}",
        f"machine={platform.machine()}",
        f"data={spec.data_version() if spec.data_version else ''}",
        *_installed(),
    ]
    for package in SOURCE_PACKAGES:
        folder = package_dir(package)
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            parts.append(f"{package}/{path.relative_to(folder)}={file_digest(path)}")
    module_file = getattr(import_module(module), "__file__", None)
    if module_file:
        parts.append(f"module={module}={file_digest(Path(module_file))}")
    digest.update("\n".join(parts).encode())
    return digest.hexdigest()[:32]
