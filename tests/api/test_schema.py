"""Schemathesis over the API's OpenAPI document, bounded so it finishes in CI: generated requests for every
operation, anonymous and as a signed-in operator with a registered key; no response may be a server error
or break the schema. Also: every operation documents an example."""

from __future__ import annotations

from typing import Any

import schemathesis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from autotrade.api.auth import hash_password
from autotrade.store.db import Database
from autotrade.store.models import User
from tests.api.conftest import Calls, auth, make_operator, signup_login

KEY_BODY = {
    "app_key": "PSappkey-known-123",
    "app_secret": "secret-known-4567890",
    "account_no": "12345678901",
    "daily_limit": 5_000_000,
}


def test_no_server_error_and_no_schema_violation(api: tuple[TestClient, Database, Calls]) -> None:
    client, db, _ = api
    signup_login(client, "ops@example.com")
    make_operator(db, "ops@example.com")  # the role is read at login
    login = {"email": "ops@example.com", "password": "correct horse battery"}
    token = client.post("/api/auth/login", json=login).json()["access_token"]
    assert client.post("/api/user/register-api", json=KEY_BODY, headers=auth(token)).status_code == 200
    password = hash_password(login["password"])
    limits = client.app.state.deps.limits  # type: ignore[attr-defined]
    limits.account_free = limits.client_failures = limits.signups = 10**6  # fuzzing is not an attack
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        # a fresh token for each operation: the fuzzed logout and password change (its example holds the
        # real password) revoke the ones before
        with db.unit_of_work() as s:
            s.execute(sa.update(User).where(User.email == login["email"]).values(password_hash=password))
        token = client.post("/api/auth/login", json=login).json()["access_token"]
        for headers in (auth(token), {}):
            _fuzz(operation, headers)


def _fuzz(operation: Any, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=6, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        case.call_and_validate(headers=headers)

    check()


def test_every_operation_has_an_example(api: tuple[TestClient, Database, Calls]) -> None:
    client, _, _ = api
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    missing = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            bodies = [c.get("schema", {}) for c in op.get("requestBody", {}).get("content", {}).values()]
            ok = [r for code, r in op["responses"].items() if code.startswith("2")]
            refs = bodies + [c.get("schema", {}) for r in ok for c in r.get("content", {}).values()]
            named = [schemas[x["$ref"].rsplit("/", 1)[-1]] for x in refs if "$ref" in x]
            if named and not any("examples" in n or "example" in n for n in named):
                missing.append(f"{method.upper()} {path}")
    assert not missing, f"operations without an example: {missing}"
