"""The local stack: Kafka, Redis, Triton, an inference worker and the drift monitor, as child processes
of one run directory.

State lives in the run directory (one JSON record per child), so ``up``, ``status`` and ``down`` work from
separate invocations of the CLI, and a second stack with another run directory and other ports can run beside.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from dlstream.config.settings import Settings
from dlstream.domain.errors import StackError
from dlstream.runtime.net import port_open
from dlstream.tools.stack.drift_monitor import DriftMonitorService
from dlstream.tools.stack.inference_worker import InferenceWorker
from dlstream.tools.stack.kafka_broker import KafkaBroker
from dlstream.tools.stack.process import ProcessGroup, ProcessRecord, is_running, scrub_arguments
from dlstream.tools.stack.redis_server import RedisServer
from dlstream.tools.stack.security import StackSecurity
from dlstream.tools.stack.service import StackService
from dlstream.tools.stack.triton_server import TritonServer

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """What ``status`` reports for one service."""

    name: str
    # "running", "unhealthy", "crashed" (its log says so, its process lingers), "dead" (recorded but gone)
    # or "stopped" (never started)
    state: str
    pid: int | None
    ports: dict[str, tuple[str, int]]
    log_path: str
    crash: str | None = None  # the line in which a crashed service reported its crash

    @property
    def ok(self) -> bool:
        """True when the service runs and answers its health probe."""
        return self.state == "running"


class LocalStack:
    """Starts, checks and stops the stack's children, by recorded pid only."""

    def __init__(self, settings: Settings, *, project_root: Path) -> None:
        self.run_dir = (project_root / settings.stack.stack_dir).resolve()
        self.processes = ProcessGroup()
        repository = (project_root / settings.triton.model_repository).resolve()
        self.repository = repository
        # A run directory that once held the secure stack stays secure: its broker knows only SCRAM users.
        security = StackSecurity(self.run_dir / "secure")
        self.security: StackSecurity | None = None
        if settings.stack.secure or security.exists():
            hosts = {settings.kafka.first_host_port[0], settings.redis.host}
            security.ensure(hosts)
            self.security = security

        def identity(name: str) -> Settings:
            return security.apply(settings, name) if self.security is not None else settings

        # The stack's own checks, topics and reference statistics go through its own identity.
        self._settings = settings
        self.settings = identity("stack")
        available: dict[str, StackService] = {
            "kafka": KafkaBroker(self.run_dir, self.settings, security=self.security),
            "redis": RedisServer(self.run_dir, self.settings, security=self.security),
            "triton": TritonServer(
                self.run_dir,
                settings,
                repository=repository,
                control_key=security.triton_control_key() if self.security is not None else None,
            ),
            "inference": InferenceWorker(self.run_dir, identity("inference"), repository=repository),
            "drift": DriftMonitorService(self.run_dir, identity("drift"), repository=repository),
        }
        self.services: dict[str, StackService] = {name: available[name] for name in settings.stack.services}

    def _record_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def record(self, name: str) -> ProcessRecord | None:
        """The recorded child for ``name``, if any."""
        return ProcessRecord.load(self._record_path(name))

    def install(self) -> None:
        """Fetch everything the services need (Kafka jars, checks for binaries)."""
        for service in self.services.values():
            service.install()

    def up(self) -> list[ServiceStatus]:
        """Start every service that is not running and wait until all are healthy; with Redis among them,
        publish the repository's reference statistics there (the drift monitor reads them from Redis).

        Raises:
            StackError: when a service cannot start, dies, or is not healthy in time.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Others may pass through (a service run as another user reaches its folder), never list or read.
        self.run_dir.chmod(0o711)
        if self.security is not None:
            self.security.write_client_env(self._settings)
            self.security.write_admin_env(self._settings)
        for name in self.services:
            self.start(name)
        if "redis" in self.services and self.repository.is_dir():
            from dlstream.repository.references import publish_references

            published = publish_references(self.settings, self.repository)
            log.info("stack.references_published", versions=len(published))
        return self.status()

    def start(self, name: str) -> None:
        """Start one service unless its recorded child is still running, then wait for health. A child
        that crashed but lingers is killed (with its process group) and started again."""
        service = self.services[name]
        record = self.record(name)
        if record is not None and is_running(record):
            crash = _crash(service, record)
            if crash is None:
                self._wait_healthy(service, record)
                return
            log.warning(
                "stack.replacing_crashed", service=name, pid=record.pid, crash=crash, log=record.log_path
            )
            self.processes.signal(record, signal.SIGKILL)
        for purpose, (host, port) in service.ports().items():
            if port_open(host, port):
                raise StackError(f"{name} {purpose} port {host}:{port} is already in use by another process")
        service.dir.mkdir(parents=True, exist_ok=True)
        service.dir.chmod(0o700)
        service.prepare()
        if service.run_as is not None:
            hand_over(service.dir, *service.run_as)
        began = time.monotonic()
        secrets = service.secret_arguments()
        record = self.processes.spawn(
            name,
            service.argv(),
            env=service.env(),
            cwd=self.run_dir,
            log_path=service.log_path,
            secrets=secrets,
            umask=0o077,  # what a server writes (segments, append-only file, logs) is its owner's only
        )
        record.save(self._record_path(name))
        log.info("stack.started", service=name, pid=record.pid, log=record.log_path)
        self._wait_healthy(service, record, secrets)
        service.after_healthy()
        log.info("stack.healthy", service=name, pid=record.pid, seconds=round(time.monotonic() - began, 1))

    def _wait_healthy(
        self, service: StackService, record: ProcessRecord, secrets: Sequence[str] = ()
    ) -> None:
        deadline = time.monotonic() + self.settings.stack.start_timeout_s
        while True:
            if not is_running(record):
                self.processes.reap()
                raise StackError(
                    f"{service.name} exited while starting; last lines of {service.log_path}:\n"
                    + tail(service.log_path, 30)
                )
            healthy = service.healthy()
            # The server has parsed its command line once it logs; then its secrets leave its arguments.
            if secrets and (healthy or service.log_path.stat().st_size > record.log_offset):
                if not scrub_arguments(record.pid, secrets):
                    log.warning("stack.arguments_not_scrubbed", service=service.name, pid=record.pid)
                secrets = ()
            if healthy:
                return
            if time.monotonic() > deadline:
                limit = self.settings.stack.start_timeout_s
                raise StackError(f"{service.name} not healthy after {limit}s; see {service.log_path}")
            time.sleep(0.25)

    def status(self) -> list[ServiceStatus]:
        """The state of each service: running, unhealthy, crashed, dead (recorded but gone) or stopped."""
        result = []
        for name, service in self.services.items():
            record = self.record(name)
            crash = None
            if record is None:
                state, pid = "stopped", None
            elif not is_running(record):
                state, pid = "dead", record.pid
            elif (crash := _crash(service, record)) is not None:
                state, pid = "crashed", record.pid
            else:
                state, pid = ("running" if service.healthy() else "unhealthy"), record.pid
            result.append(ServiceStatus(name, state, pid, service.ports(), str(service.log_path), crash))
        return result

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to one service's process group (used to test crash recovery); the record stays."""
        record = self.record(name)
        if record is None:
            raise StackError(f"{name} was not started by this stack")
        self.processes.signal(record, sig)

    def stop(self, name: str) -> None:
        """Stop one service (SIGTERM, SIGKILL after the stop timeout) and forget it; ``start`` restarts it."""
        record = self.record(name)
        if record is None:
            return
        self.processes.stop(record, self.settings.stack.stop_timeout_s)
        self.services[name].after_stop()
        self._record_path(name).unlink(missing_ok=True)
        log.info("stack.stopped", service=name, pid=record.pid)

    def down(self) -> None:
        """Stop every recorded child (reverse start order) and forget it."""
        for name in reversed(list(self.services)):
            self.stop(name)

    def log_lines(self, name: str, lines: int) -> Iterator[str]:
        """The last ``lines`` lines of a service's log."""
        service = self.services.get(name)
        if service is None:
            raise StackError(f"unknown service {name!r}; choose from {', '.join(self.services)}")
        yield from tail(service.log_path, lines).splitlines()


def hand_over(folder: Path, uid: int, gid: int) -> None:
    """Make ``folder`` and everything in it the property of ``uid``:``gid``, but for files also linked
    elsewhere (Kafka's jars, hard links into the starting user's cache): those stay as they are, so the
    service user cannot change what another user runs."""
    os.chown(folder, uid, gid)
    for path in folder.rglob("*"):
        info = path.lstat()
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            continue
        os.chown(path, uid, gid, follow_symlinks=False)


def _crash(service: StackService, record: ProcessRecord) -> str | None:
    """The line in which the recorded child reported its crash, if the service has such a line and it did."""
    if service.crash_line is None:
        return None
    return first_match(Path(record.log_path), record.log_offset, service.crash_line)


def first_match(path: Path, offset: int, pattern: re.Pattern[str]) -> str | None:
    """The first line of ``path`` from byte ``offset`` on that ``pattern`` matches, if any."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            for raw in f:
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                if pattern.search(line):
                    return line
    except FileNotFoundError:
        pass
    return None


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
