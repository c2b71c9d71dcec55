"""Who may read the drift report page: whoever holds Redis credentials that may read the data it shows.

The page is read through the requester's own Redis credentials (HTTP Basic: the Redis ACL user, ``default``
for a Redis with a password only), so Redis's ACL decides, exactly as for ``dlstream drift status``. A Redis
without a password serves the page to anyone who reaches the monitor's web port, which binds to loopback
unless ``drift.bind_host`` says otherwise.
"""

from __future__ import annotations

import base64
import binascii

from pydantic import SecretStr

from dlstream.config.settings import RedisSettings

REALM = 'Basic realm="dlstream drift report", charset="UTF-8"'


def needs_login(redis: RedisSettings) -> bool:
    """True when the report's data needs credentials in Redis."""
    return redis.password is not None and bool(redis.password.get_secret_value())


def requester_redis(redis: RedisSettings, authorization: str | None) -> RedisSettings | None:
    """``redis`` with the user and password of an HTTP Basic ``Authorization`` header; None when the header
    is missing or malformed."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user or not password:
        return None
    username = None if user == "default" else user
    return redis.model_copy(update={"username": username, "password": SecretStr(password)})
