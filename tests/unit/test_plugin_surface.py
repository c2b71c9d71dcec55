"""The model SDK's public surface: plugins (the built-in ones and the test plugins) and a user's own model
import only ``dlstream.models`` and the domain of dlstream, and the surface loads nothing until it is used."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import dlstream.models

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "pipelines" / "dlstream" / "models" / "zoo"
BUILT_IN = ("digits", "imagenet", "speech_digits", "text_topics")
PLUGINS = [
    *(ZOO / f"{name}.py" for name in BUILT_IN),
    ROOT / "tests" / "plugins" / "shapes.py",
    ROOT / "tests" / "own_model" / "tones.py",
]


def _dlstream_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dlstream":
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.split(".")[0] == "dlstream"}
    return names


@pytest.mark.parametrize("path", PLUGINS, ids=lambda p: p.stem)
def test_a_plugin_imports_only_the_sdk_and_the_domain(path: Path) -> None:
    # The built-in plugins keep their networks and data beside them, in the zoo.
    own = ("dlstream.domain.", "dlstream.models.zoo.")
    outside = {m for m in _dlstream_imports(path) if m != "dlstream.models" and not m.startswith(own)}
    assert outside == set(), f"{path.name} imports dlstream internals: {sorted(outside)}"


def test_every_public_name_resolves() -> None:
    for name in dlstream.models.__all__:
        assert getattr(dlstream.models, name) is not None, name


@pytest.mark.slow(reason="starts a Python that imports the SDK (0.4-0.7 s beside a CPU hog)")
def test_importing_a_part_of_the_sdk_does_not_load_torch() -> None:
    code = (
        "import json, sys\n"
        "import dlstream.models, dlstream.models.payloads\n"
        "print(json.dumps('torch' in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) is False
