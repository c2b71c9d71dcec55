"""Redis from Debian's ``redis-server``, bound to loopback, append-only file in the run directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from dlstream.adapters.redis.connection import redis_client
from dlstream.config.settings import Settings
from dlstream.domain.errors import StackError
from dlstream.tools.stack.security import StackSecurity, write_private
from dlstream.tools.stack.service import StackService


class RedisServer(StackService):
    """One redis-server process."""

    name = "redis"

    def __init__(self, run_dir: Path, settings: Settings, *, security: StackSecurity | None = None) -> None:
        super().__init__(run_dir)
        self.settings = settings
        self.security = security
        self.service_user = settings.stack.service_user

    def ports(self) -> dict[str, tuple[str, int]]:
        return {"redis": (self.settings.redis.host, self.settings.redis.port)}

    def install(self) -> None:
        if shutil.which("redis-server") is None:
            raise StackError("redis-server is not installed; run `make setup` (Debian package redis-server)")

    def prepare(self) -> None:
        self.install()
        self.check_reachable()
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        lines = [f"bind {self.settings.redis.host}", *self._listener()]
        lines += [
            f"dir {data}",
            "daemonize no",
            'logfile ""',
            "appendonly yes",
            "appendfsync everysec",
            "save 300 10",
            "maxmemory-policy noeviction",
        ]
        if self.security is not None:
            lines += self.security.redis_acl_lines(self.settings.drift.key_prefix)
        elif self.settings.redis.password is not None:
            lines.append(f"requirepass {self.settings.redis.password.get_secret_value()}")
        write_private(self.dir / "redis.conf", "\n".join(lines) + "\n")

    def _listener(self) -> list[str]:
        port = self.settings.redis.port
        if self.security is None:
            return [f"port {port}"]
        sec = self.security
        return [
            "port 0",
            f"tls-port {port}",
            f"tls-cert-file {self.own_copy(sec.cert_path)}",
            f"tls-key-file {self.own_copy(sec.key_path)}",
            f"tls-ca-cert-file {self.own_copy(sec.ca_path)}",
            "tls-auth-clients no",
        ]

    def argv(self) -> list[str]:
        return self.as_service_user(["redis-server", str(self.dir / "redis.conf")])

    def healthy(self) -> bool:
        store = redis_client(self.settings.redis)
        try:
            return store.ping_ok()
        finally:
            store.close()
