"""The API app over an in-process ASGI transport, on both database backends."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import SecretStr

from autotrade.api import schemas as sc
from autotrade.api.app import ApiDeps, RegistrationError, create_app
from autotrade.api.auth import SessionTokens
from autotrade.domain.exits import StrategyStatus, TierStatus
from autotrade.domain.models import ApiStatus, Tier
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import ConditionalOrder, ThreeTierStrategy, User, UserApiKey
from autotrade.store.repositories import Users
from autotrade.vault.gateway import enable_key, open_positions
from autotrade.vault.keys import KeyStore
from autotrade.vault.kms import LocalKms


@dataclass
class Calls:
    executed: list[sc.ExecuteRequest] = field(default_factory=list)


@pytest.fixture
def api(db_url: str, tmp_path: object) -> Iterator[tuple[TestClient, Database, Calls]]:
    upgrade(db_url)
    db = Database(db_url)
    keys = KeyStore(db, LocalKms(tmp_path / "master.key"))  # type: ignore[operator]
    calls = Calls()

    class VaultRegistrar:
        """The vault's key store; the broker check is replaced by a rule on the key text (tests only)."""

        async def register(
            self, user_id: str, app_key: SecretStr, app_secret: SecretStr, account_no: str, daily_limit: int
        ) -> sc.AccountInfo:
            if app_key.get_secret_value().startswith("BAD"):
                raise RegistrationError("the broker refused this app key and secret")
            try:
                keys.store(
                    user_id, account_no, app_key, app_secret, account_name=None, daily_limit=daily_limit
                )
            except PermissionError:
                raise RegistrationError("this account is registered to another user") from None
            return sc.AccountInfo(account_no=account_no, account_name=None, balance=10_000_000)

        async def rotate(
            self, user_id: str, account_no: str, app_key: SecretStr, app_secret: SecretStr
        ) -> None:
            await self.register(user_id, app_key, app_secret, account_no, 10_000_000)

        async def delete(self, user_id: str, account_no: str) -> list[str]:
            keys.destroy(user_id, account_no)
            return open_positions(db, user_id, account_no)

        async def enable(self, user_id: str, account_no: str, by: str) -> ApiStatus | None:
            enable_key(db, None, user_id, account_no, by=by, now=datetime.now(UTC))
            with db.unit_of_work() as s:
                return s.scalar(sa.select(UserApiKey.api_status).where(
                    UserApiKey.user_id == user_id, UserApiKey.account_no == account_no))  # fmt: skip

    async def execute(req: sc.ExecuteRequest) -> sc.ExecuteResponse:
        calls.executed.append(req)
        return sc.ExecuteResponse(
            success=False,
            executed_orders=0,
            total_investment=0,
            strategies_created=0,
            message="flow run started",
            run_id="run-1",
        )

    async def prices(user_id: str, codes: list[str]) -> dict[str, int]:
        return {c: 72_800 for c in codes}

    deps = ApiDeps(
        db=db, tokens=SessionTokens(b"t" * 32), registrar=VaultRegistrar(), execute=execute, prices=prices
    )
    with TestClient(create_app(deps)) as client:
        yield client, db, calls
    db.dispose()


def signup_login(client: TestClient, email: str, password: str = "correct horse battery") -> str:
    r = client.post("/api/auth/signup", json={"email": email, "password": password})
    assert r.status_code == 201, r.text
    r = client.post("/api/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_operator(db: Database, email: str) -> None:
    with db.unit_of_work() as s:
        user = s.query(User).filter_by(email=email).one()
        user.role = "operator"


def add_strategy(db: Database, user_id: str, account_no: str) -> None:
    with db.unit_of_work() as s:
        Users(s).ensure_account(user_id, account_no)
        st = ThreeTierStrategy(
            user_id=user_id,
            account_no=account_no,
            buy_intent_key=f"k-{user_id}",
            code="005930",
            name="삼성전자",
            quantity=10,
            entry_price=70_000,
            entry_date=date(2026, 11, 24),
            stop_loss_price=66_500,
            preserve_price=72_800,
            take_profit_price=75_600,
            held_quantity=5,
            preserve_target=5,
            preserve_sold=5,
            status=StrategyStatus.PRESERVE_TRIGGERED,
            armed_at=datetime.now(UTC),
        )
        for tier, price, status in [
            (Tier.STOP_LOSS, 66_500, TierStatus.ACTIVE),
            (Tier.PRESERVE, 72_800, TierStatus.EXECUTED),
            (Tier.TAKE_PROFIT, 75_600, TierStatus.ACTIVE),
        ]:
            st.orders.append(
                ConditionalOrder(
                    user_id=user_id,
                    account_no=account_no,
                    order_type=tier,
                    trigger_price=price,
                    quantity=5,
                    status=status,
                )
            )
        s.add(st)
