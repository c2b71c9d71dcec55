"""Who may read the drift report page (pure: the Basic credentials become the requester's Redis settings)."""

from __future__ import annotations

import base64

import pytest

from dlstream.config.settings import load_settings
from dlstream.drift.report_access import needs_login, requester_redis

pytestmark = pytest.mark.unit


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_the_report_needs_a_login_exactly_when_redis_has_a_password() -> None:
    assert not needs_login(load_settings(environment="test").redis)
    assert needs_login(load_settings(environment="test", redis={"password": "pw"}).redis)


def test_basic_credentials_become_the_requesters_redis_user_and_password() -> None:
    redis = load_settings(environment="test", redis={"username": "drift", "password": "monitor's"}).redis
    mine = requester_redis(redis, _basic("client:s3cret:with:colons"))
    assert mine is not None
    assert (mine.username, mine.password.get_secret_value() if mine.password else None) == (
        "client",
        "s3cret:with:colons",
    )
    default = requester_redis(redis, _basic("default:pw"))
    assert default is not None
    assert default.username is None  # Redis's default user, as with a password-only Redis


@pytest.mark.parametrize(
    "header", [None, "", "Bearer abc", "Basic", "Basic !!!", _basic("no-colon"), _basic(":pw"), _basic("u:")]
)
def test_a_missing_or_malformed_login_gives_no_credentials(header: str | None) -> None:
    redis = load_settings(environment="test", redis={"password": "pw"}).redis
    assert requester_redis(redis, header) is None
