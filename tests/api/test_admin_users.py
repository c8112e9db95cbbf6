"""Users and roles through the API (operators only, each change a security event naming the operator), and
the Prefect UI's address for the operator's links (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from autotrade.store.db import Database
from autotrade.store.models import SecurityEvent, User
from tests.api.conftest import Calls, api, auth, make_operator, signup_login  # noqa: F401 - the fixture


def user_id(db: Database, email: str) -> str:
    with db.unit_of_work() as s:
        return str(s.scalar(sa.select(User.user_id).where(User.email == email)))


def forget(client: TestClient, user: str) -> None:
    """The role was changed in the database behind the API: drop its cached copy (as USER_CACHE_SECONDS
    would)."""
    client.app.state.deps.sessions.forget(user)  # type: ignore[attr-defined]


def test_users_and_roles_are_for_operators_and_audited(api: tuple[TestClient, Database, Calls]) -> None:  # noqa: F811
    client, db, _ = api
    alice, bob = signup_login(client, "alice@example.com"), signup_login(client, "bob@example.com")
    bob_id, alice_id = user_id(db, "bob@example.com"), user_id(db, "alice@example.com")
    key = {"app_key": "K" * 16, "app_secret": "S" * 16, "account_no": "22222222222"}
    r = client.post("/api/user/register-api", headers=auth(bob), json=key)
    assert r.status_code == 200, r.text

    # A plain user: 403 on every route, nothing changes; no token: 401.
    assert client.get("/api/admin/users").status_code == 401
    assert client.get("/api/admin/users", headers=auth(alice)).status_code == 403
    put = client.put(f"/api/admin/users/{alice_id}/role", headers=auth(alice), json={"role": "operator"})
    assert put.status_code == 403
    assert client.get("/api/admin/prefect", headers=auth(alice)).status_code == 403

    make_operator(db, "alice@example.com")
    forget(client, alice_id)
    listed = client.get("/api/admin/users", headers=auth(alice))
    assert listed.status_code == 200, listed.text
    rows = {u["email"]: u for u in listed.json()}
    assert rows["alice@example.com"]["role"] == "operator" and rows["bob@example.com"]["role"] == "user"
    assert rows["bob@example.com"]["keys"] == [{"account_no": "22222222222", "api_status": "ACTIVE"}]
    assert "K" * 16 not in listed.text and "S" * 16 not in listed.text

    # Bob made an operator: his own session sees the role at once (this process forgets its cached user).
    assert client.get("/api/admin/users", headers=auth(bob)).status_code == 403
    up = client.put(f"/api/admin/users/{bob_id}/role", headers=auth(alice), json={"role": "operator"})
    assert up.status_code == 200 and up.json()["role"] == "operator", up.text
    assert client.get("/api/admin/users", headers=auth(bob)).status_code == 200
    # ... and back; unknown roles and users are refused; nobody drops their own role.
    down = client.put(f"/api/admin/users/{bob_id}/role", headers=auth(alice), json={"role": "user"})
    assert down.status_code == 200 and down.json()["role"] == "user"
    assert client.get("/api/admin/users", headers=auth(bob)).status_code == 403
    bad = client.put(f"/api/admin/users/{bob_id}/role", headers=auth(alice), json={"role": "root"})
    assert bad.status_code == 422
    assert client.put("/api/admin/users/nobody/role", headers=auth(alice),
                      json={"role": "user"}).status_code == 404  # fmt: skip
    own = client.put(f"/api/admin/users/{alice_id}/role", headers=auth(alice), json={"role": "user"})
    assert own.status_code == 409
    with db.unit_of_work() as s:
        assert s.get(User, alice_id).role == "operator"  # type: ignore[union-attr]
        events = s.scalars(
            sa.select(SecurityEvent).where(SecurityEvent.rule == "role_change").order_by(SecurityEvent.id)
        ).all()
        assert [(e.user_id, e.action_taken) for e in events] == [
            (bob_id, f"role user -> operator by operator {alice_id}"),
            (bob_id, f"role operator -> user by operator {alice_id}"),
        ]
    # the operator's security events list shows them
    seen = client.get("/api/admin/security-events", headers=auth(alice)).json()
    assert [e["rule"] for e in seen[:2]] == ["role_change", "role_change"]


@pytest.mark.parametrize(
    ("env", "ui", "source"),
    [
        ({}, None, None),
        ({"PREFECT_API_URL": "http://10.0.0.5:4200/api"}, "http://10.0.0.5:4200", "PREFECT_API_URL"),
        ({"PREFECT_UI_URL": "https://prefect.example.com/", "PREFECT_API_URL": "http://10.0.0.5:4200/api"},
         "https://prefect.example.com", "PREFECT_UI_URL"),
    ],
)  # fmt: skip
def test_prefect_ui_address(
    api: tuple[TestClient, Database, Calls],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    ui: str | None,
    source: str | None,
) -> None:
    from autotrade.api.ops import prefect_ui_url

    monkeypatch.delenv("PREFECT_UI_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert prefect_ui_url() == (ui, source)
    if env.get("PREFECT_API_URL"):
        return  # the route would ask that (absent) server; prefect_links waits at most a few seconds
    client, db, _ = api
    token = signup_login(client, "op@example.com")
    make_operator(db, "op@example.com")
    forget(client, user_id(db, "op@example.com"))
    r = client.get("/api/admin/prefect", headers=auth(token))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ui_url"] is None and body["source"] is None
    names = [d["name"] for d in body["deployments"]]
    assert "evening_signal_and_buy/evening" in names and all(d["url"] is None for d in body["deployments"])
