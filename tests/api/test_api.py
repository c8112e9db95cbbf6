"""Each endpoint's success and failure paths, and cross-user access attempts (all refused)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from autotrade.store.db import Database
from tests.api.conftest import Calls, add_strategy, auth, make_operator, signup_login

KEY = {
    "app_key": "PSappkey-known-123",
    "app_secret": "secret-known-4567890",
    "account_no": "12345678901",
    "daily_limit": 5_000_000,
}


def test_health(api: tuple[TestClient, Database, Calls]) -> None:
    client, _, _ = api
    assert client.get("/health").json()["status"] == "ok"


def test_signup_login_and_bad_credentials_look_alike(api: tuple[TestClient, Database, Calls]) -> None:
    client, _, _ = api
    signup_login(client, "a@example.com")
    wrong = client.post("/api/auth/login", json={"email": "a@example.com", "password": "wrong password!"})
    nobody = client.post(
        "/api/auth/login", json={"email": "nobody@example.com", "password": "wrong password!"}
    )
    assert wrong.status_code == nobody.status_code == 401
    assert wrong.json() == nobody.json()
    again = client.post("/api/auth/signup", json={"email": "a@example.com", "password": "x" * 12})
    fresh = client.post("/api/auth/signup", json={"email": "b@example.com", "password": "x" * 12})
    assert again.status_code == fresh.status_code == 201 and again.json() == fresh.json()
    # the existing account keeps its password
    kept = client.post("/api/auth/login", json={"email": "a@example.com", "password": "x" * 12})
    assert kept.status_code == 401


def test_login_is_rate_limited(api: tuple[TestClient, Database, Calls]) -> None:
    client, _, _ = api
    codes = [
        client.post(
            "/api/auth/login", json={"email": "z@example.com", "password": "bad password"}
        ).status_code
        for _ in range(7)
    ]
    assert codes == [401] * 6 + [429]  # five free failures, the sixth blocks the account for a second


def test_register_status_and_toggle(api: tuple[TestClient, Database, Calls]) -> None:
    client, _db, _ = api
    token = signup_login(client, "a@example.com")
    r = client.post("/api/user/register-api", json=KEY, headers=auth(token))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["account_info"]["account_no"] == "12345678901"
    assert "known" not in r.text  # the key is never echoed
    status = client.get("/api/user/api-status", headers=auth(token)).json()
    assert status["api_status"] == "ACTIVE" and status["daily_limit"] == 5_000_000
    assert status["is_auto_trading_enabled"] is False
    on = client.post(
        "/api/user/auto-trading", json={"account_no": "12345678901", "enabled": True}, headers=auth(token)
    )
    assert on.status_code == 200
    assert client.get("/api/user/accounts", headers=auth(token)).json()[0]["is_auto_trading_enabled"] is True
    gone = client.delete("/api/user/api-key/12345678901", headers=auth(token))
    assert gone.status_code == 200
    assert client.get("/api/user/api-status", headers=auth(token)).status_code == 404


def test_register_refused_and_validation(api: tuple[TestClient, Database, Calls]) -> None:
    client, _, _ = api
    token = signup_login(client, "a@example.com")
    bad = client.post("/api/user/register-api", json={**KEY, "app_key": "BADKEY-12345"}, headers=auth(token))
    assert bad.status_code == 400 and "refused" in bad.json()["detail"]
    invalid = client.post(
        "/api/user/register-api", json={**KEY, "account_no": "12ab", "daily_limit": -1}, headers=auth(token)
    )
    assert invalid.status_code == 422
    fields = {tuple(e["loc"]) for e in invalid.json()["detail"]}
    assert ("body", "account_no") in fields and ("body", "daily_limit") in fields


def test_unauthenticated_and_forged_tokens(api: tuple[TestClient, Database, Calls]) -> None:
    client, _, _ = api
    assert client.get("/api/user/api-status").status_code == 401
    assert client.get("/api/user/api-status", headers=auth("not.a.token")).status_code == 401
    import jwt

    forged = jwt.encode(
        {"sub": "x", "role": "operator", "typ": "session", "exp": 9999999999}, "g" * 32, algorithm="HS256"
    )
    assert client.get("/api/user/api-status", headers=auth(forged)).status_code == 401


def test_cross_user_access_is_refused(api: tuple[TestClient, Database, Calls]) -> None:
    client, db, _ = api
    alice = signup_login(client, "alice@example.com")
    bob = signup_login(client, "bob@example.com")
    assert client.post("/api/user/register-api", json=KEY, headers=auth(alice)).status_code == 200
    # Bob cannot see, toggle, rotate, delete or re-register Alice's account.
    assert client.get("/api/user/api-status?account_no=12345678901", headers=auth(bob)).status_code == 404
    toggle = {"account_no": "12345678901", "enabled": True}
    assert client.post("/api/user/auto-trading", json=toggle, headers=auth(bob)).status_code == 404
    rotate = {"account_no": "12345678901", "app_key": "PSother-key-1", "app_secret": "other-secret-1"}
    assert client.post("/api/user/api-key/rotate", json=rotate, headers=auth(bob)).status_code == 404
    assert client.delete("/api/user/api-key/12345678901", headers=auth(bob)).status_code == 404
    assert client.post("/api/user/register-api", json=KEY, headers=auth(bob)).status_code == 400
    assert client.get("/api/user/accounts", headers=auth(bob)).json() == []
    alice_id = client.get("/api/user/api-status", headers=auth(alice)).json()["account_no"]
    assert alice_id == "12345678901"
    # Strategies: each user sees only their own.
    with db.unit_of_work() as s:
        from autotrade.store.models import User

        alice_user = s.query(User).filter_by(email="alice@example.com").one().user_id
    add_strategy(db, alice_user, "12345678901")
    assert client.get("/api/auto-trading/three-tier-strategies", headers=auth(bob)).json() == {
        "active_strategies": []
    }
    mine = client.get("/api/auto-trading/three-tier-strategies", headers=auth(alice)).json()[
        "active_strategies"
    ]
    assert len(mine) == 1


def test_strategies_view_matches_specification_example(api: tuple[TestClient, Database, Calls]) -> None:
    client, db, _ = api
    token = signup_login(client, "a@example.com")
    with db.unit_of_work() as s:
        from autotrade.store.models import User

        uid = s.query(User).filter_by(email="a@example.com").one().user_id
    add_strategy(db, uid, "12345678901")
    [st] = client.get("/api/auto-trading/three-tier-strategies", headers=auth(token)).json()[
        "active_strategies"
    ]
    assert st == {
        "code": "005930",
        "name": "삼성전자",
        "entry_price": 70000,
        "current_price": 72800,
        "profit_rate": 4.0,
        "status": "PRESERVE_TRIGGERED",
        "orders": [
            {"type": "STOP_LOSS", "price": 66500, "status": "ACTIVE"},
            {"type": "PRESERVE", "price": 72800, "status": "EXECUTED"},
            {"type": "TAKE_PROFIT", "price": 75600, "status": "ACTIVE"},
        ],
    }


@pytest.mark.parametrize("role", ["user", "operator"])
def test_execute_is_for_operators(api: tuple[TestClient, Database, Calls], role: str) -> None:
    client, db, calls = api
    token = signup_login(client, "op@example.com")
    if role == "operator":
        make_operator(db, "op@example.com")
        token = client.post(
            "/api/auth/login", json={"email": "op@example.com", "password": "correct horse battery"}
        ).json()["access_token"]
    body = {"scan_results": [{"code": "005930", "name": "삼성전자", "score": 8.5, "current_price": 70000}]}
    r = client.post("/api/auto-trading/execute", json=body, headers=auth(token))
    if role == "user":
        assert r.status_code == 403 and calls.executed == []
    else:
        # The API hands the runner the posted scan as parsed (no defaults invented, no day chosen) and
        # answers 202 because the run started without a summary.
        assert r.status_code == 202 and len(calls.executed) == 1
        (sent,) = calls.executed
        (row,) = sent.scan_results
        assert (row.code, row.name, row.score, row.current_price) == ("005930", "삼성전자", 8.5, 70000)
        assert sent.trading_day is None
    bad = client.post(
        "/api/auto-trading/execute", json={"scan_results": [{"code": "5930"}]}, headers=auth(token)
    )
    # A plain user learns nothing about the body's shape (the role is checked first); an operator is told
    # what is wrong with it.
    if role == "user":
        assert bad.status_code == 403, bad.text
    else:
        assert bad.status_code == 422, bad.text
        fields = {tuple(e["loc"]) for e in bad.json()["detail"]}
        assert ("body", "scan_results", 0, "code") in fields, fields
    assert len(calls.executed) == (0 if role == "user" else 1)


def test_the_daily_limit_is_changed_with_patch(api: tuple[TestClient, Database, Calls]) -> None:
    client, _, _ = api
    token = signup_login(client, "a@example.com")
    assert client.post("/api/user/register-api", json=KEY, headers=auth(token)).status_code == 200
    r = client.patch("/api/user/api-key/12345678901", json={"daily_limit": 3_000_000}, headers=auth(token))
    assert r.status_code == 200 and r.json()["daily_limit"] == 3_000_000 and r.json()["action"] is None
    assert client.get("/api/user/api-status", headers=auth(token)).json()["daily_limit"] == 3_000_000
    other = signup_login(client, "b@example.com")  # another user's account looks missing
    path = "/api/user/api-key/12345678901"
    assert client.patch(path, json={"daily_limit": 1}, headers=auth(other)).status_code == 404
    assert client.patch(path, json={"daily_limit": 0}, headers=auth(token)).status_code == 422
