"""A service whose log says it crashed while its process lingers (Triton hung in the exit after a fatal
signal) is reported ``crashed``, and ``start`` replaces it, whole process group included."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dlstream.config.settings import load_settings
from dlstream.tools.stack.local_stack import LocalStack, ServiceStatus, first_match
from dlstream.tools.stack.process import group_members, is_running
from dlstream.tools.stack.service import StackService
from dlstream.tools.stack.triton_server import TritonServer
from tests.integration.conftest import PROJECT_ROOT

pytestmark = pytest.mark.integration

# Prints the crash line while the file named by its argument exists, then lingers with a child of its own.
LINGERING = """
import pathlib, subprocess, sys, time
subprocess.Popen(["sleep", "300"])
print("I1203 04:52:52 model_lifecycle.cc:839] loaded", flush=True)
if pathlib.Path(sys.argv[1]).exists():
    print("Signal (11) received.", flush=True)
time.sleep(300)
"""


class Lingering(StackService):
    """Stands in for Triton: same crash line, no ports."""

    name = "triton"
    crash_line = TritonServer.crash_line

    def __init__(self, run_dir: Path, crash_file: Path) -> None:
        super().__init__(run_dir)
        self.crash_file = crash_file
        self.stops = 0

    def ports(self) -> dict[str, tuple[str, int]]:
        return {}

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def argv(self) -> list[str]:
        return [sys.executable, "-c", LINGERING, str(self.crash_file)]

    def healthy(self) -> bool:
        return "loaded" in self.log_path.read_text()

    def after_stop(self) -> None:
        self.stops += 1


def _status(stack: LocalStack) -> ServiceStatus:
    return {s.name: s for s in stack.status()}["triton"]


def test_a_crashed_lingering_service_is_reported_and_replaced_with_its_group(tmp_path: Path) -> None:
    settings = load_settings(environment="test", stack={"run_dir": tmp_path / "run", "services": ("triton",)})
    stack = LocalStack(settings, project_root=PROJECT_ROOT)
    crash_file = tmp_path / "crash"
    service = Lingering(stack.run_dir, crash_file)
    stack.services["triton"] = service
    try:
        crash_file.touch()
        stack.up()
        crashed = stack.record("triton")
        assert crashed is not None
        assert _status(stack).state == "crashed"
        assert _status(stack).crash == "Signal (11) received."
        members = group_members(crashed.pid)
        assert len(members) == 2  # the server and its own child

        crash_file.unlink()
        stack.up()
        replaced = stack.record("triton")
        assert replaced is not None
        assert replaced.pid != crashed.pid
        assert not is_running(crashed)
        assert group_members(crashed.pid) == []
        # The old crash line is still in the appended log, before the new child's output.
        assert replaced.log_offset > 0
        assert first_match(service.log_path, 0, TritonServer.crash_line) == "Signal (11) received."
        assert _status(stack).state == "running"
        assert _status(stack).crash is None
    finally:
        stack.down()
    assert service.stops == 1


def test_only_fatal_signals_count_as_a_crash() -> None:
    crash = TritonServer.crash_line
    assert crash.search("Signal (11) received.")
    assert crash.search("Signal (6) received.")
    assert not crash.search("Signal (15) received.")  # SIGTERM: a normal stop
    assert not crash.search("Signal (2) received.")
