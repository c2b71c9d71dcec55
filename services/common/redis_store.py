"""Redis adapter: a client built from settings, with redis-py errors translated to the project's own."""

from __future__ import annotations

from typing import Any

import redis
from redis.exceptions import RedisError

from services.common.errors import TransientError
from services.common.settings import RedisSettings


class RedisStore:
    """A thin wrapper over a redis-py client; services call ``raw`` for data commands."""

    def __init__(self, client: Any) -> None:
        self.raw = client

    def ping_ok(self) -> bool:
        """True when Redis answers PING."""
        try:
            return bool(self.raw.ping())
        except RedisError:
            return False

    def ping(self) -> None:
        """PING, raising :class:`TransientError` when Redis is unreachable."""
        try:
            self.raw.ping()
        except RedisError as exc:
            raise TransientError(f"Redis is unreachable: {exc}") from exc

    def close(self) -> None:
        """Release the connection pool."""
        self.raw.close()


def connection_options(settings: RedisSettings, timeout_s: float) -> dict[str, Any]:
    """Keyword arguments of redis-py's clients (sync and asyncio) for the configured Redis."""
    return {
        "host": settings.host,
        "port": settings.port,
        "db": settings.db,
        "password": settings.password.get_secret_value() if settings.password else None,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
    }


def redis_client(settings: RedisSettings, *, timeout_s: float = 2.0) -> RedisStore:
    """A client for the configured Redis (connections are opened lazily)."""
    return RedisStore(sync_redis(settings, timeout_s=timeout_s))


def sync_redis(settings: RedisSettings, *, timeout_s: float = 5.0) -> redis.Redis:
    """A plain synchronous redis-py client for the configured Redis (connections opened lazily)."""
    return redis.Redis(**connection_options(settings, timeout_s))
