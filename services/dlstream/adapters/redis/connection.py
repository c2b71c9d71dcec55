"""Redis adapter: a client built from settings, with redis-py errors translated to the project's own."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio.retry
import redis.retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError, ConnectionError, NoPermissionError, RedisError

from dlstream.config.settings import RedisSettings
from dlstream.domain.errors import AccessDenied, DlstreamError, TransientError
from dlstream.runtime.net import tls_mismatch


class RedisStore:
    """A thin wrapper over a redis-py client; services call ``raw`` for data commands."""

    def __init__(self, client: Any, settings: RedisSettings | None = None) -> None:
        self.raw = client
        self.settings = settings

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
            raise redis_failure(exc, "Redis is unreachable", self.settings) from exc

    def close(self) -> None:
        """Release the connection pool."""
        self.raw.close()


RETRIES = 3
"""Retries of a command whose connection failed (redis-py's own default is 10)."""


def worth_retrying(error: Exception) -> bool:
    """Whether a connection error may pass: a refused password never does (redis-py's AuthenticationError is
    a ConnectionError, which it retries with backoff: 4 s lost before the refusal was reported)."""
    return not isinstance(error, AuthenticationError)


def connection_options(settings: RedisSettings, timeout_s: float, *, asyncio: bool = False) -> dict[str, Any]:
    """Keyword arguments of redis-py's clients (sync, or ``asyncio``) for the configured Redis."""
    retry = redis.asyncio.retry.Retry if asyncio else redis.retry.Retry
    backoff = ExponentialWithJitterBackoff(base=0.01, cap=1.0)
    options: dict[str, Any] = {
        "retry": retry(backoff, RETRIES, is_retryable=worth_retrying),
        "host": settings.host,
        "port": settings.port,
        "db": settings.db,
        "username": settings.username,
        "password": settings.password.get_secret_value() if settings.password else None,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
    }
    if settings.tls:
        options["ssl"] = True
        options["ssl_ca_certs"] = str(settings.ssl_cafile) if settings.ssl_cafile else None
    return options


def redis_client(settings: RedisSettings, *, timeout_s: float = 2.0) -> RedisStore:
    """A client for the configured Redis (connections are opened lazily)."""
    return RedisStore(sync_redis(settings, timeout_s=timeout_s), settings)


def sync_redis(settings: RedisSettings, *, timeout_s: float = 5.0) -> redis.Redis:
    """A plain synchronous redis-py client for the configured Redis (connections opened lazily)."""
    return redis.Redis(**connection_options(settings, timeout_s))


def redis_failure(exc: RedisError, doing: str, settings: RedisSettings | None = None) -> DlstreamError:
    """The project's error for a redis-py error: :class:`AccessDenied` for refused credentials, a missing
    ACL right, or (with ``settings``, probed once) a client that does or does not speak TLS to a server that
    does not or does; else :class:`TransientError` ``"<doing>: <error>"``."""
    if isinstance(exc, AuthenticationError):
        return AccessDenied(
            f"Redis refused the credentials: {exc}; check DLSTREAM_REDIS__USERNAME and its password"
        )
    if isinstance(exc, NoPermissionError):
        return AccessDenied(f"Redis denied this ACL user: {exc}")
    if settings is not None and isinstance(exc, ConnectionError):
        mismatch = tls_mismatch(settings.host, settings.port, wants_tls=settings.tls)
        if mismatch is not None:
            return AccessDenied(
                f"Redis refused the connection: {mismatch} (DLSTREAM_REDIS__TLS is {settings.tls})"
            )
    return TransientError(f"{doing}: {exc}")
