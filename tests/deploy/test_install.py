"""The wheel as a user installs it: one import namespace, and a client install small and free of torch."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from scripts.install_sizes import build_wheel, install_set, tree_bytes, wheel_top_level

pytestmark = pytest.mark.deploy

CLIENT_BUDGET_MB = 150


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def client_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the plain ``pip install dlstream`` (the client set), run from a folder outside the
    repository so that nothing of the source tree is importable by accident."""
    venv = tmp_path_factory.mktemp("client") / "venv"
    install_set(venv, "", wheel, timeout_s=600)
    return venv


def _run(venv: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=120, cwd=venv
    )


def test_the_wheel_installs_only_the_dlstream_namespace(wheel: Path) -> None:
    assert wheel_top_level(wheel) == ["dlstream"]


@pytest.mark.timeout(900)
def test_the_client_install_imports_dlstream_and_nothing_generic(client_venv: Path) -> None:
    imported = _run(client_venv, "python", "-c", "import dlstream.client.publisher, dlstream.cli.main")
    assert imported.returncode == 0, imported.stderr
    for name in ("services", "pipelines"):
        refused = _run(client_venv, "python", "-c", f"import {name}")
        assert refused.returncode == 1
        assert f"No module named '{name}'" in refused.stderr


@pytest.mark.timeout(900)
def test_the_client_install_is_small_and_has_no_torch_kubernetes_or_matplotlib(client_venv: Path) -> None:
    (site,) = client_venv.glob("lib/python*/site-packages")
    assert tree_bytes(site) / 1e6 <= CLIENT_BUDGET_MB
    for name in ("torch", "kubernetes", "matplotlib", "faust", "redis", "tritonclient"):
        assert _run(client_venv, "python", "-c", f"import {name}").returncode == 1, name


@pytest.mark.timeout(900)
def test_the_client_commands_run_and_the_others_say_which_extra_they_need(client_venv: Path) -> None:
    listed = _run(client_venv, "dlstream", "--help")
    assert listed.returncode == 0, listed.stderr
    for command in ("publish", "subscribe", "label", "dlq", "models", "drift"):
        assert command in listed.stdout
    for command in ("publish", "subscribe", "label", "dlq"):
        shown = _run(client_venv, "dlstream", command, "--help")
        assert shown.returncode == 0, (command, shown.stderr)
    assert "(not installed) pip install 'dlstream[stack]'" in " ".join(listed.stdout.split())
    for argv, extra in (
        (("models", "build"), "models"),
        (("stack", "up"), "stack"),
        (("drift", "run"), "monitor"),
    ):
        refused = _run(client_venv, "dlstream", *argv)
        assert refused.returncode != 0, argv
        assert f"pip install 'dlstream[{extra}]'" in refused.stderr, (argv, refused.stderr)
