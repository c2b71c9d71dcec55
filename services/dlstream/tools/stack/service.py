"""What every service of the local stack provides to the stack that runs it."""

from __future__ import annotations

import functools
import os
import pwd
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import structlog

from dlstream.domain.errors import StackError

log = structlog.get_logger(__name__)


def service_account(user: str) -> tuple[int, int] | None:
    """(uid, gid) of ``user`` when this process is root and may hand a server to it; None: run as self."""
    if os.geteuid() != 0 or not user:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        log.warning(
            "stack.no_service_user",
            user=user,
            hint="make setup creates it; the servers run as the starting user",
        )
        return None
    return entry.pw_uid, entry.pw_gid


def unreachable_part(path: Path, uid: int, gid: int) -> Path | None:
    """The first folder on the way to ``path`` that user ``uid`` (group ``gid``) may not pass, if any.
    ``path`` itself is not checked: the stack hands the service its own folder."""
    for folder in reversed(path.resolve().parents):
        info = folder.stat()
        if info.st_uid == uid:
            allowed = info.st_mode & 0o100
        elif info.st_gid == gid:
            allowed = info.st_mode & 0o010
        else:
            allowed = info.st_mode & 0o001
        if not allowed:
            return folder
    return None


class StackService(ABC):
    """A server the local stack starts, checks and stops."""

    name: str
    #: A line the server prints once it has crashed, also when its process lives on (hung in its exit).
    crash_line: re.Pattern[str] | None = None
    #: The unprivileged user the server runs as when the stack is started as root ("": the starting user).
    service_user = ""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / self.name

    @property
    def log_path(self) -> Path:
        """Where the child's stdout and stderr go."""
        return self.dir / f"{self.name}.log"

    @abstractmethod
    def ports(self) -> dict[str, tuple[str, int]]:
        """The (host, port) pairs this service binds, by purpose."""

    def install(self) -> None:  # noqa: B027 - most services have nothing to install
        """Fetch what the service needs to run (idempotent)."""

    @abstractmethod
    def prepare(self) -> None:
        """Write configuration and initialise storage before a start."""

    @abstractmethod
    def argv(self) -> list[str]:
        """The command line of the server."""

    @functools.cached_property
    def run_as(self) -> tuple[int, int] | None:
        """(uid, gid) of :attr:`service_user` when the stack hands the server to it; its folder is theirs."""
        return service_account(self.service_user)

    def as_service_user(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run as the service user (``setpriv``, no supplementary groups) when there is one."""
        if self.run_as is None:
            return list(argv)
        uid, gid = self.run_as
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]

    def service_env(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` with HOME in the service's folder when it runs as the service user (the starting user's
        home is not that user's to read or write)."""
        if self.run_as is not None:
            env["HOME"] = str(self.dir)
        return env

    def own_copy(self, path: Path) -> Path:
        """``path`` itself, or, when the server runs as the service user, a copy in its own folder (mode
        0600, handed over with the folder): the stack's secure material stays in a folder only the starting
        user may enter."""
        if self.run_as is None:
            return path
        folder = self.dir / "material"
        folder.mkdir(mode=0o700, exist_ok=True)
        copy = folder / path.name
        copy.unlink(missing_ok=True)
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(path.read_bytes())
        return copy

    def check_reachable(self, *paths: Path) -> None:
        """Refuse to start when the service user could not reach ``paths`` (or its own folder).

        Raises:
            StackError: naming the closed folder and what to do.
        """
        if self.run_as is None:
            return
        for path in (self.dir, *paths):
            barrier = unreachable_part(path, *self.run_as)
            if barrier is not None:
                raise StackError(
                    f"{self.name} runs as {self.service_user!r}, who cannot reach {path}: {barrier} (mode "
                    f"{barrier.stat().st_mode & 0o777:04o}) is closed to that user; give it search "
                    "permission (chmod o+x), or set DLSTREAM_STACK__SERVICE_USER= to run the servers as the "
                    "starting user"
                )

    def secret_arguments(self) -> list[str]:
        """Secrets the server can only take on its command line: masked in the stack's record, and
        overwritten in the running process's argument memory once it has read them."""
        return []

    def env(self) -> dict[str, str]:
        """The server's environment."""
        return self.service_env(dict(os.environ))

    @abstractmethod
    def healthy(self) -> bool:
        """One quick health probe; False while starting or when unhealthy."""

    def after_healthy(self) -> None:  # noqa: B027 - optional hook
        """Work that needs the running server (e.g. creating topics)."""

    def after_stop(self) -> None:  # noqa: B027 - optional hook
        """Remove what a stopped (or killed) server leaves behind outside its run folder."""
