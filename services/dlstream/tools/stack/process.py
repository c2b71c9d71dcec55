"""Child processes of the local stack, tracked by pid and start time, never by name.

Each child is started in a new session, so its pid is also its process-group id: stopping the group also
stops what the child started itself (Triton's Python backend stubs, for instance). The kernel start time is
recorded beside the pid so that a reused pid is never mistaken for the child.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from dlstream.domain.errors import StackError


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """What the stack remembers of a child it started."""

    name: str
    pid: int
    start_ticks: int
    argv: list[str]
    log_path: str
    log_offset: int = 0  # where this child's output begins in its log (logs are appended across restarts)

    def save(self, path: Path) -> None:
        """Write the record atomically as JSON, readable by its owner only."""
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ProcessRecord | None:
        """Read a record, or None when there is none."""
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return cls(**raw)


def _read_stat(path: Path) -> list[str] | None:
    """Fields 3 onward of a /proc stat file (state first), or None when it is gone."""
    try:
        raw = path.read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name in field 2 may hold spaces and parentheses; everything after the last ')' is fixed.
    return raw[raw.rindex(")") + 2 :].split()


def _stat_fields(pid: int) -> list[str] | None:
    return _read_stat(Path(f"/proc/{pid}/stat"))


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it does not exist."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _alive(pid: int, fields: list[str]) -> bool:
    # The leader thread of a multi-threaded process (a JVM) shows "Z" while its other threads still run
    # shutdown hooks, so the process is alive while any of its threads is not a zombie.
    if fields[0] != "Z":
        return True
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return False
    for task in tasks:
        task_fields = _read_stat(task / "stat")
        if task_fields is not None and task_fields[0] != "Z":
            return True
    return False


def is_running(record: ProcessRecord) -> bool:
    """True when the recorded process still exists, has a live thread and is the same process."""
    fields = _stat_fields(record.pid)
    if fields is None or int(fields[19]) != record.start_ticks:
        return False
    return _alive(record.pid, fields)


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        fields = _stat_fields(pid)
        if fields and int(fields[2]) == pgid and _alive(pid, fields):
            members.append(pid)
    return members


def mask(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by asterisks of the same length."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "*" * len(secret))
    return text


def scrub_arguments(pid: int, secrets: Sequence[str]) -> bool:
    """Overwrite ``secrets`` with asterisks in the argument memory of a running process, which
    ``/proc/<pid>/cmdline`` (readable by every local user) shows; True when it held one. For servers that
    take a secret only on their command line, once they have parsed it (as MySQL does to its own
    password). Needs the right to trace the process: root, or its parent of the same user."""
    fields = _stat_fields(pid)
    if fields is None or not any(secrets):
        return False
    start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48 and 49 of stat)
    try:
        with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            arguments = mem.read(end - start)
            scrubbed = mask(arguments.decode("utf-8", errors="surrogateescape"), secrets)
            data = scrubbed.encode("utf-8", errors="surrogateescape")
            if data == arguments:
                return False
            mem.seek(start)
            mem.write(data)
    except OSError:  # gone, or not ours to trace
        return False
    return True


class ProcessGroup:
    """Starts children in their own sessions and stops them by recorded id."""

    def __init__(self) -> None:
        self._popen: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        secrets: Sequence[str] = (),
        umask: int = -1,
    ) -> ProcessRecord:
        """Start ``argv`` detached from the terminal, output appended to ``log_path`` (mode 0600), with
        ``umask`` (-1: this process's). ``secrets`` are masked in the record."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            offset = log.seek(0, os.SEEK_END)
            try:
                proc = subprocess.Popen(
                    list(argv),
                    cwd=cwd,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    umask=umask,
                )
            except OSError as exc:
                raise StackError(f"cannot start {name}: {exc}") from exc
        self._popen[proc.pid] = proc
        ticks = start_ticks(proc.pid)
        if ticks is None:
            proc.wait()
            raise StackError(f"{name} exited at once with code {proc.returncode}; see {log_path}")
        recorded = [mask(arg, secrets) for arg in argv]
        return ProcessRecord(name, proc.pid, ticks, recorded, str(log_path), offset)

    def reap(self) -> None:
        """Collect the exit status of children of this process that have ended."""
        for pid, proc in list(self._popen.items()):
            if proc.poll() is not None:
                del self._popen[pid]

    def signal(self, record: ProcessRecord, sig: signal.Signals) -> None:
        """Send ``sig`` to the child's whole process group, if the child is still the recorded one."""
        if not is_running(record):
            self.reap()
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, sig)
        if sig == signal.SIGKILL:
            self._wait_gone(record, 5.0)

    def stop(self, record: ProcessRecord, timeout_s: float) -> None:
        """SIGTERM the child's group, wait up to ``timeout_s``, then SIGKILL what is left of the group."""
        if is_running(record):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, signal.SIGTERM)
            self._wait_gone(record, timeout_s)
        leftovers = group_members(record.pid)
        if leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
            while group_members(record.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        self.reap()

    def _wait_gone(self, record: ProcessRecord, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.reap()
            if not is_running(record):
                return
            time.sleep(0.05)
