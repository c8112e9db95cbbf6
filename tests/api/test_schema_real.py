"""Schemathesis a second time, over the real service (``build_deps``) on the embedded stack: keys checked with
the simulator through the vault, current prices through the gateway, the execute endpoint running the
evening flow in this process. No response may be a server error or break the schema (the stubbed pass in
``test_schema.py`` checks the HTTP shapes; this one the wiring behind them)."""

from __future__ import annotations

from datetime import datetime, time
from pathlib import Path
from typing import Any

import schemathesis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from autotrade.api.app import create_app
from autotrade.api.auth import hash_password
from autotrade.api.service import build_deps
from autotrade.demo.stack import embedded_stack
from autotrade.domain.krx import KST
from autotrade.store.models import User
from tests.api.conftest import add_strategy, auth, make_operator, signup_login
from tests.flows.conftest import DAY1, prefect_server

__all__ = ["prefect_server"]  # the flows' Prefect test server, for the execute endpoint's runs

LOGIN = {"email": "ops@example.com", "password": "correct horse battery"}


def test_no_server_error_over_the_real_service(prefect_server: None, db_url: str, tmp_path: Path) -> None:
    start = datetime.combine(DAY1, time(15, 40), tzinfo=KST)
    with embedded_stack(tmp_path, seed=3, stocks=6, start=start, database_url=db_url) as stack:
        app = create_app(build_deps(stack.runtime))
        with TestClient(app) as client:
            signup_login(client, LOGIN["email"])
            make_operator(stack.db, LOGIN["email"])
            token = client.post("/api/auth/login", json=LOGIN).json()["access_token"]
            # The operator's own key, issued by the simulator and checked with it through the vault.
            stack.sim.admin.create_account("8200000001", "ops", 20_000_000)
            key = stack.sim.admin.create_appkey("8200000001")
            body = {"app_key": key["appkey"], "app_secret": key["secretkey"], "account_no": "8200000001",
                    "daily_limit": 5_000_000}  # fmt: skip
            r = client.post("/api/user/register-api", json=body, headers=auth(token))
            assert r.status_code == 200, r.text
            with stack.db.unit_of_work() as s:  # a position: the strategies view asks the broker for prices
                user_id = s.scalars(sa.select(User.user_id).where(User.email == LOGIN["email"])).one()
            add_strategy(stack.db, user_id, "8200000001")
            limits = client.app.state.deps.limits  # type: ignore[attr-defined]
            limits.account_free = limits.client_failures = limits.signups = 10**6  # fuzzing is not an attack
            password = hash_password(LOGIN["password"])
            schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
            operations = [result.ok() for result in schema.get_all_operations()]
            assert len(operations) >= 12
            seen: list[str] = []
            for operation in operations:
                with stack.db.unit_of_work() as s:  # the fuzzed password change may have changed it
                    who = User.email == LOGIN["email"]
                    s.execute(sa.update(User).where(who).values(password_hash=password))
                token = client.post("/api/auth/login", json=LOGIN).json()["access_token"]
                for headers in (auth(token), {}):
                    _fuzz(operation, headers)
                seen.append(operation.label)
            assert any("execute" in label for label in seen), seen


def _fuzz(operation: Any, headers: dict[str, str]) -> None:
    """As the stubbed pass, without the check that a schema-valid request is accepted: here a well-formed key
    the broker does not know is refused (400), as it must be."""

    @given(case=operation.as_strategy())
    @settings(max_examples=6, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

    check()
