"""What every service of the local stack provides to the stack that runs it."""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from pathlib import Path


class StackService(ABC):
    """A server the local stack starts, checks and stops."""

    name: str
    #: A line the server prints once it has crashed, also when its process lives on (hung in its exit).
    crash_line: re.Pattern[str] | None = None
    #: (uid, gid) the server runs as, when the stack hands it to an unprivileged user; its folder is theirs.
    run_as: tuple[int, int] | None = None

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

    def secret_arguments(self) -> list[str]:
        """Secrets the server can only take on its command line: masked in the stack's record, and
        overwritten in the running process's argument memory once it has read them."""
        return []

    def env(self) -> dict[str, str]:
        """The server's environment."""
        return dict(os.environ)

    @abstractmethod
    def healthy(self) -> bool:
        """One quick health probe; False while starting or when unhealthy."""

    def after_healthy(self) -> None:  # noqa: B027 - optional hook
        """Work that needs the running server (e.g. creating topics)."""

    def after_stop(self) -> None:  # noqa: B027 - optional hook
        """Remove what a stopped (or killed) server leaves behind outside its run folder."""
