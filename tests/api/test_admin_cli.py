"""``autotrade admin``: create an operator, revoke and grant the role, list users, against the database the
API uses (SQLite and PostgreSQL); the API sees a role change once its 5 s user cache has passed (shortened
here)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from autotrade.cli import app
from autotrade.config import get_settings
from autotrade.store.db import Database
from tests.api.conftest import Calls, auth, signup_login


def admin(
    monkeypatch: pytest.MonkeyPatch, db_url: str, *args: str, password: str | None = None
) -> tuple[int, str]:
    monkeypatch.setenv("AUTOTRADE_DATABASE_URL", db_url)
    if password is not None:
        monkeypatch.setenv("AUTOTRADE_ADMIN_PASSWORD", password)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["admin", *args])
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.output


def test_operator_lifecycle(
    api: tuple[TestClient, Database, Calls], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _, _ = api
    client.app.state.deps.sessions.cache_seconds = 0.3  # type: ignore[attr-defined]
    code, out = admin(monkeypatch, db_url, "create-operator", "Ops@Example.com", password="operator pass 1")
    assert code == 0 and "operator Ops@Example.com created" in out
    again = admin(monkeypatch, db_url, "create-operator", "ops@example.com", password="operator pass 1")
    assert again[0] == 1 and "exists" in again[1]
    assert admin(monkeypatch, db_url, "create-operator", "x@example.com", password="short")[0] == 1
    login = {"email": "ops@example.com", "password": "operator pass 1"}
    token = client.post("/api/auth/login", json=login)
    ops = auth(token.json()["access_token"])
    assert client.get("/api/admin/security-events", headers=ops).status_code == 200
    code, out = admin(monkeypatch, db_url, "revoke-operator", "ops@example.com")
    assert code == 0 and "operator -> user" in out
    time.sleep(0.4)
    assert client.get("/api/admin/security-events", headers=ops).status_code == 403
    signup_login(client, "u@example.com")
    granted = admin(monkeypatch, db_url, "grant-operator", "u@example.com")[1]
    assert granted.strip() == "u@example.com: user -> operator"
    assert admin(monkeypatch, db_url, "grant-operator", "nobody@example.com")[0] == 1
    code, out = admin(monkeypatch, db_url, "users")
    rows = [line.split("\t")[:2] for line in out.strip().splitlines()]
    assert code == 0 and rows == [["ops@example.com", "user"], ["u@example.com", "operator"]]
