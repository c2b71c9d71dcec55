"""Children are stopped by recorded id with everything they started, and a reused pid is never touched."""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import pytest

from dlstream.tools.stack.process import ProcessGroup, group_members, is_running

pytestmark = pytest.mark.integration


def test_stop_takes_down_the_whole_group_including_grandchildren(tmp_path: Path) -> None:
    group = ProcessGroup()
    # The shell ignores SIGTERM, so only the SIGKILL that follows the timeout can end it.
    script = "trap '' TERM; sleep 300 & sleep 300 & wait"
    record = group.spawn(
        "sleeper", ["sh", "-c", script], env=dict(os.environ), cwd=tmp_path, log_path=tmp_path / "s.log"
    )
    try:
        assert is_running(record)
        assert record.pid in group_members(record.pid)
    finally:
        group.stop(record, timeout_s=1.0)
    assert not is_running(record)
    assert group_members(record.pid) == []


def test_a_record_whose_pid_now_belongs_to_another_process_is_not_running(tmp_path: Path) -> None:
    group = ProcessGroup()
    record = group.spawn(
        "sleeper", ["sleep", "300"], env=dict(os.environ), cwd=tmp_path, log_path=tmp_path / "s.log"
    )
    try:
        impostor = dataclasses.replace(record, start_ticks=record.start_ticks - 1)
        assert not is_running(impostor)
        group.signal(impostor, signal.SIGKILL)  # must not touch the real process
        assert is_running(record)
    finally:
        group.stop(record, timeout_s=5.0)
    assert not is_running(record)
