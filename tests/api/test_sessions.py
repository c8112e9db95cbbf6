"""Revocable sessions and limits that stop attackers, not users, on SQLite and PostgreSQL: a token stops
working after logout, after a password change, after the user is deleted and (once the 5 s user cache has
passed; shortened here) after a demotion; the right password still logs in after an attack on the
account; spraying one client across emails and bulk sign-ups are limited; X-Forwarded-For counts only
from a configured proxy; limiter state lives in the database (a second app on the same database sees it)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from autotrade.api.app import ApiDeps, create_app
from autotrade.api.limits import client_address, trusted_networks
from autotrade.store.db import Database
from autotrade.store.models import AuthThrottle, User
from tests.api.conftest import Calls, auth, make_operator, signup_login

PASSWORD = "correct horse battery"


def login(client: TestClient, email: str, password: str = PASSWORD) -> int:
    return client.post("/api/auth/login", json={"email": email, "password": password}).status_code


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(api: tuple[TestClient, Database, Calls]) -> Iterator[Clock]:
    c = Clock()
    api[0].app.state.deps.limits.clock = c  # type: ignore[attr-defined]
    yield c


def test_logout_revokes_only_the_token_presented(api: tuple[TestClient, Database, Calls]) -> None:
    client, _, _ = api
    first = signup_login(client, "a@example.com")
    second = client.post("/api/auth/login", json={"email": "a@example.com", "password": PASSWORD})
    other = second.json()["access_token"]
    assert client.post("/api/auth/logout", headers=auth(first)).status_code == 200
    assert client.get("/api/user/accounts", headers=auth(first)).status_code == 401
    assert client.post("/api/auth/logout", headers=auth(first)).status_code == 401
    assert client.get("/api/user/accounts", headers=auth(other)).status_code == 200


def test_a_password_change_revokes_every_earlier_token(api: tuple[TestClient, Database, Calls]) -> None:
    client, _, _ = api
    first = signup_login(client, "a@example.com")
    second = client.post("/api/auth/login", json={"email": "a@example.com", "password": PASSWORD})
    other = second.json()["access_token"]
    wrong = {"current_password": "not my password", "new_password": "a brand new passphrase"}
    assert client.post("/api/auth/password", json=wrong, headers=auth(first)).status_code == 401
    assert client.get("/api/user/accounts", headers=auth(first)).status_code == 200  # nothing changed
    change = {"current_password": PASSWORD, "new_password": "a brand new passphrase"}
    assert client.post("/api/auth/password", json=change, headers=auth(first)).status_code == 200
    for token in (first, other):
        assert client.get("/api/user/accounts", headers=auth(token)).status_code == 401
    assert login(client, "a@example.com") == 401
    fresh = client.post(
        "/api/auth/login", json={"email": "a@example.com", "password": change["new_password"]}
    )
    assert fresh.status_code == 200
    assert client.get("/api/user/accounts", headers=auth(fresh.json()["access_token"])).status_code == 200


def test_deleted_and_demoted_users_lose_access_within_the_cache_time(
    api: tuple[TestClient, Database, Calls],
) -> None:
    client, db, _ = api
    cache = 0.5
    client.app.state.deps.sessions.cache_seconds = cache  # type: ignore[attr-defined]
    signup_login(client, "ops@example.com")
    make_operator(db, "ops@example.com")
    ops = client.post("/api/auth/login", json={"email": "ops@example.com", "password": PASSWORD})
    ops_token = ops.json()["access_token"]
    gone = signup_login(client, "gone@example.com")
    assert client.get("/api/admin/security-events", headers=auth(ops_token)).status_code == 200
    assert client.get("/api/user/accounts", headers=auth(gone)).status_code == 200
    with db.unit_of_work() as s:
        s.execute(sa.update(User).where(User.email == "ops@example.com").values(role="user"))
        s.execute(sa.delete(User).where(User.email == "gone@example.com"))
    time.sleep(cache + 0.1)
    assert client.get("/api/admin/security-events", headers=auth(ops_token)).status_code == 403
    assert client.get("/api/user/accounts", headers=auth(ops_token)).status_code == 200  # still a user
    key = {"app_key": "PSappkey-known-123", "app_secret": "secret-known-4567890", "account_no": "12345678901"}
    assert client.post("/api/user/register-api", json=key, headers=auth(gone)).status_code == 401
    with db.unit_of_work() as s:  # the deleted user's token did not bring a user row back
        assert s.scalar(sa.select(sa.func.count()).select_from(User).where(User.email.is_(None))) == 0


def test_the_right_password_still_logs_in_after_an_attack(
    api: tuple[TestClient, Database, Calls], clock: Clock
) -> None:
    client, _, _ = api
    signup_login(client, "victim@example.com")
    codes = []
    waits = []
    for _ in range(120):  # one guess a second for two minutes: the account's wait doubles up to its cap
        r = client.post("/api/auth/login", json={"email": "victim@example.com", "password": "guess guess!"})
        codes.append(r.status_code)
        waits += [int(r.headers["Retry-After"])] if r.status_code == 429 else []
        clock.now += timedelta(seconds=1)
    assert codes[:6] == [401] * 6 and 429 in codes
    # 6 free, then waits of 1, 2, 4, 8, 16, 30, 30 s: 13 of 120 guesses checked, no wait over 30 s
    assert codes.count(401) == 13 and max(waits) == 29  # asked a second after a 30 s block began
    # The real user, from another address, right after the attack: waits at most 30 s, then gets in.
    user = TestClient(client.app, client=("198.51.100.7", 40000))
    refused = user.post("/api/auth/login", json={"email": "victim@example.com", "password": PASSWORD})
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 30
    clock.now += timedelta(seconds=30)
    assert login(user, "victim@example.com") == 200
    assert login(user, "victim@example.com") == 200  # success cleared the account's count


def test_spraying_across_emails_stops_the_client_not_the_users(
    api: tuple[TestClient, Database, Calls], clock: Clock
) -> None:
    client, _, _ = api
    signup_login(client, "real@example.com")
    attacker = TestClient(client.app, client=("203.0.113.9", 40000))
    codes = [login(attacker, f"user{i}@example.com", "Summer2026!") for i in range(31)]
    assert codes[:30] == [401] * 30 and codes[30] == 429
    assert login(attacker, "real@example.com") == 429  # even a right password, from this client
    assert login(client, "real@example.com") == 200  # the real user elsewhere is not affected
    clock.now += timedelta(minutes=15, seconds=1)
    assert login(attacker, "user1@example.com", "Summer2026!") == 401


def test_sign_ups_are_limited_per_client(api: tuple[TestClient, Database, Calls], clock: Clock) -> None:
    client, _, _ = api
    bulk = TestClient(client.app, client=("203.0.113.10", 40000))
    def signup(c: TestClient, email: str) -> int:
        return c.post("/api/auth/signup", json={"email": email, "password": "x" * 12}).status_code

    assert [signup(bulk, f"b{i}@example.com") for i in range(7)] == [201] * 5 + [429, 429]
    assert (
        client.post("/api/auth/signup", json={"email": "c@example.com", "password": "x" * 12}).status_code
        == 201
    )


def test_forwarded_for_only_from_a_trusted_proxy(
    api: tuple[TestClient, Database, Calls], clock: Clock
) -> None:
    client, _, _ = api
    deps: ApiDeps = client.app.state.deps  # type: ignore[attr-defined]
    deps.trusted_proxies = trusted_networks("10.0.0.0/8")
    proxy = TestClient(client.app, client=("10.1.2.3", 40000))
    spoofer = TestClient(client.app, client=("203.0.113.11", 40000))
    for i in range(30):  # an untrusted peer's X-Forwarded-For is ignored: it is limited by its own address
        spoofer.post("/api/auth/login", json={"email": f"s{i}@example.com", "password": "x"},
                     headers={"X-Forwarded-For": f"192.0.2.{i}"})  # fmt: skip
    assert login(spoofer, "s@example.com") == 429
    # through the proxy, two real clients are told apart by the hop the proxy added (the rightmost)
    hdr = {"X-Forwarded-For": "1.1.1.1, 192.0.2.50"}
    for i in range(30):
        proxy.post("/api/auth/login", json={"email": f"p{i}@example.com", "password": "x"}, headers=hdr)
    assert (
        proxy.post(
            "/api/auth/login", json={"email": "p@example.com", "password": "x"}, headers=hdr
        ).status_code
        == 429
    )
    other = {"X-Forwarded-For": "192.0.2.51"}
    assert (
        proxy.post(
            "/api/auth/login", json={"email": "p@example.com", "password": "x"}, headers=other
        ).status_code
        == 401
    )
    nets = trusted_networks("10.0.0.0/8, 127.0.0.1")
    assert client_address("10.0.0.1", "9.9.9.9, 127.0.0.1", nets) == "9.9.9.9"
    assert client_address("10.0.0.1", "not-an-ip", nets) == "10.0.0.1"
    assert client_address("8.8.8.8", "9.9.9.9", nets) == "8.8.8.8"


def test_limiter_state_is_shared_and_pruned(api: tuple[TestClient, Database, Calls], clock: Clock) -> None:
    client, db, _ = api
    deps: ApiDeps = client.app.state.deps  # type: ignore[attr-defined]
    second = ApiDeps(
        db=db, tokens=deps.tokens, registrar=deps.registrar, execute=deps.execute, prices=deps.prices
    )
    second.limits.clock = clock  # type: ignore[union-attr]
    other_process = TestClient(create_app(second))
    for _ in range(6):
        login(client, "v@example.com", "wrong wrong")
    assert login(other_process, "v@example.com", "wrong wrong") == 429  # the block is seen by the other app
    with db.unit_of_work() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(AuthThrottle)) == 2  # the account, the client
    clock.now += timedelta(hours=2)
    deps.limits._pruned_at = 0.0  # type: ignore[union-attr]
    login(client, "w@example.com", "wrong wrong")
    with db.unit_of_work() as s:
        keys = set(s.scalars(sa.select(AuthThrottle.key)))
    assert keys == {"account|w@example.com", "client|testclient"}
