"""The OpenMP wait policy that training commands set before torch loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlstream.runtime.cpu_sharing import WAIT_POLICY

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, preset: str | None = None) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter whose wait policy is ``preset`` (None: not set)."""
    env = {k: v for k, v in os.environ.items() if k != WAIT_POLICY}
    if preset is not None:
        env[WAIT_POLICY] = preset
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)


def _policy_after(preamble: str, preset: str | None) -> str:
    code = (
        f"{preamble}\n"
        "import os\n"
        "from dlstream.runtime.cpu_sharing import share_cores_while_waiting\n"
        "share_cores_while_waiting()\n"
        "print(os.environ.get('OMP_WAIT_POLICY', 'unset'))\n"
    )
    out = _run(code, preset)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize(
    ("preamble", "preset", "expected"),
    [
        ("", None, "PASSIVE"),  # before torch loads: its threads will sleep while they wait
        ("", "ACTIVE", "ACTIVE"),  # the user's own choice stands
        pytest.param(
            "import torch",
            None,
            "unset",  # too late to matter: left alone rather than claimed
            marks=pytest.mark.slow(reason="starts a Python that imports torch"),
        ),
    ],
)
def test_the_wait_policy_is_set_only_before_torch_loads_and_never_over_a_choice(
    preamble: str, preset: str | None, expected: str
) -> None:
    assert _policy_after(preamble, preset) == expected


@pytest.mark.slow(reason="starts a Python that imports the CLI (1.5 s beside a CPU hog)")
def test_the_models_commands_set_it() -> None:
    runner = (
        "from click.testing import CliRunner\n"
        "from dlstream.cli.main import cli\n"
        "assert CliRunner().invoke(cli, ['models', 'build', '--help']).exit_code == 0\n"
    )
    out = _run(runner + "import os\nprint(os.environ.get('OMP_WAIT_POLICY', 'unset'))\n")
    assert (out.returncode, out.stdout.strip()) == (0, "PASSIVE"), out.stderr
