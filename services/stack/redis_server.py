"""Redis from Debian's ``redis-server``, bound to loopback, append-only file in the run directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from services.common.errors import StackError
from services.common.redis_store import redis_client
from services.common.settings import Settings
from services.stack.service import StackService


class RedisServer(StackService):
    """One redis-server process."""

    name = "redis"

    def __init__(self, run_dir: Path, settings: Settings) -> None:
        super().__init__(run_dir)
        self.settings = settings

    def ports(self) -> dict[str, tuple[str, int]]:
        return {"redis": (self.settings.redis.host, self.settings.redis.port)}

    def install(self) -> None:
        if shutil.which("redis-server") is None:
            raise StackError("redis-server is not installed; run `make setup` (Debian package redis-server)")

    def prepare(self) -> None:
        self.install()
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        lines = [
            f"bind {self.settings.redis.host}",
            f"port {self.settings.redis.port}",
            f"dir {data}",
            "daemonize no",
            'logfile ""',
            "appendonly yes",
            "appendfsync everysec",
            "save 300 10",
            "maxmemory-policy noeviction",
        ]
        if self.settings.redis.password is not None:
            lines.append(f"requirepass {self.settings.redis.password.get_secret_value()}")
        conf = self.dir / "redis.conf"
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o600)

    def argv(self) -> list[str]:
        return ["redis-server", str(self.dir / "redis.conf")]

    def healthy(self) -> bool:
        store = redis_client(self.settings.redis)
        try:
            return store.ping_ok()
        finally:
            store.close()
