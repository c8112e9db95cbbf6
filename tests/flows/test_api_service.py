"""The API wired to the product (``autotrade.api.service``): keys registered through the vault and checked
with the simulator, a refused key storing nothing, rotation and deletion, and the operator's execute
running the evening flow in this process (the embedded mode) with the specification's summary."""

from __future__ import annotations

from datetime import time

import httpx
import pytest
import sqlalchemy as sa

from autotrade.api.app import create_app
from autotrade.api.service import build_deps
from autotrade.demo.stack import Stack
from autotrade.domain.models import ApiStatus
from autotrade.store.models import OrderIntentRow, User, UserApiKey
from autotrade.vault.keys import KeyUnavailable
from tests.api.conftest import add_strategy
from tests.flows.conftest import DAY1

PASSWORD = "correct horse battery"


def user_id_of(stack: Stack, email: str) -> str:
    with stack.db.unit_of_work() as s:
        return s.scalars(sa.select(User.user_id).where(User.email == email)).one()


async def login(client: httpx.AsyncClient, email: str, stack: Stack | None = None) -> dict[str, str]:
    """Sign up and log in (as an operator when ``stack`` is given: the role is set before the login)."""
    r = await client.post("/api/auth/signup", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    if stack is not None:
        with stack.db.unit_of_work() as s:
            s.execute(sa.update(User).where(User.email == email).values(role="operator"))
    r = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def api_client(stack: Stack) -> httpx.AsyncClient:
    app = create_app(build_deps(stack.runtime))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


async def test_keys_go_through_the_vault_and_the_broker(stack: Stack) -> None:
    stack.sim.admin.create_account("5200000001", "김철수", 12_345_678)
    key = stack.sim.admin.create_appkey("5200000001")
    other = stack.sim.admin.create_appkey("5200000001")
    body = {"app_key": key["appkey"], "app_secret": key["secretkey"], "account_no": "5200000001",
            "daily_limit": 3_000_000}  # fmt: skip
    async with api_client(stack) as client:
        me = await login(client, "kim@example.com")
        wrong = {**body, "app_secret": "x" * 40}
        refused = await client.post("/api/user/register-api", json=wrong, headers=me)
        assert refused.status_code == 400 and "refused" in refused.json()["detail"]
        with stack.db.unit_of_work() as s:
            assert s.scalar(sa.select(sa.func.count()).where(UserApiKey.account_no == "5200000001")) == 0

        ok = await client.post("/api/user/register-api", json=body, headers=me)
        assert ok.status_code == 200, ok.text
        assert ok.json()["account_info"]["balance"] == 12_345_678
        status = (await client.get("/api/user/api-status", headers=me)).json()
        assert status["api_status"] == "ACTIVE" and status["daily_limit"] == 3_000_000, status
        with stack.db.unit_of_work() as s:
            first = s.scalars(sa.select(UserApiKey).where(UserApiKey.account_no == "5200000001")).one()
            assert first.key_version == 1
            first_blob = first.encrypted_data_key

        rotated = await client.post(
            "/api/user/api-key/rotate", headers=me,
            json={"account_no": "5200000001", "app_key": other["appkey"], "app_secret": other["secretkey"]},
        )  # fmt: skip
        assert rotated.status_code == 200, rotated.text
        with stack.db.unit_of_work() as s:
            row = s.scalars(sa.select(UserApiKey).where(UserApiKey.account_no == "5200000001")).one()
            assert row.daily_limit == 3_000_000
            sealed = row.app_key_encrypted + row.app_secret_encrypted
            version, blob = row.key_version, row.encrypted_data_key
        # The rotation seals the new key under a new data key and moves the version on by one (temporary
        # tokens issued for version 1 stop working).
        assert other["appkey"] not in sealed and key["appkey"] not in sealed
        assert version == 2 and blob is not None and blob != first_blob
        creds = stack.runtime.brokers.keys.credentials(user_id_of(stack, "kim@example.com"), "5200000001")
        assert creds.app_key.get_secret_value() == other["appkey"]

        # The strategies view prices through the user's own key at the broker.
        stack.sim.admin.add_stocks([{"code": "005930", "name": "삼성전자", "prev_close": 70_000}])
        with stack.db.unit_of_work() as s:
            user_id = s.scalars(sa.select(User.user_id).where(User.email == "kim@example.com")).one()
        add_strategy(stack.db, user_id, "5200000001")
        # Entry 70,000 and the broker's price set to 72,100 (a 100-won tick): (72,100 - 70,000) / 70,000
        # = 2,100 / 70,000 = 0.03, so 3.0 (percent).
        stack.sim.admin.set_price("005930", 72_100)
        view = (await client.get("/api/auto-trading/three-tier-strategies", headers=me)).json()
        (row,) = view["active_strategies"]
        assert row["current_price"] == 72_100
        assert row["profit_rate"] == 3.0
        # The view priced through the user's key: the broker holds a live token for it.
        assert [t for t in stack.sim.engine.tokens.values() if t.appkey == other["appkey"]]

        gone = await client.delete("/api/user/api-key/5200000001", headers=me)
        assert gone.status_code == 200, gone.text
        # Deleted means: the broker token revoked at the broker, the data key dropped (crypto-shredded),
        # the row DELETED and auto-trading off, and nothing opens the key any more.
        assert not [t for t in stack.sim.engine.tokens.values() if t.appkey == other["appkey"]]
        with stack.db.unit_of_work() as s:
            row_ = s.scalars(sa.select(UserApiKey).where(UserApiKey.account_no == "5200000001")).one()
            assert row_.encrypted_data_key is None and row_.api_status is ApiStatus.DELETED
            assert row_.is_auto_trading_enabled is False
        with pytest.raises(KeyUnavailable):
            stack.runtime.brokers.keys.credentials_any_status(user_id, "5200000001")


async def test_the_operator_executes_the_evening_flow(stack: Stack) -> None:
    stack.at(DAY1, time(15, 40))
    stocks = stack.sim.admin.stocks()
    picked = sorted(c for c, s in stocks.items() if 5_000 <= s["price"] <= 200_000)[:3]
    scan = [{"code": c, "name": stocks[c]["name"], "score": 8.5, "current_price": int(stocks[c]["price"]),
             "reasons": ["거래량 급증"]} for c in picked]  # fmt: skip
    async with api_client(stack) as client:
        user = await login(client, "plain@example.com")
        denied = await client.post("/api/auto-trading/execute", json={"scan_results": scan}, headers=user)
        assert denied.status_code == 403
        op = await login(client, "ops@example.com", stack)
        config = {"max_investment": 10_000_000, "max_stocks": 1, "max_per_stock": 1_000_000}
        request = {"scan_results": scan, "trading_day": DAY1.isoformat(), "config": config}
        r = await client.post("/api/auto-trading/execute", json=request, headers=op)
    assert r.status_code == 200, r.text
    summary = r.json()
    with stack.db.unit_of_work() as s:
        sent = s.scalars(sa.select(OrderIntentRow).where(OrderIntentRow.order_no.is_not(None))).all()
    assert summary["success"] is True and summary["executed_orders"] == len(sent) > 0
    assert len({i.account_no for i in sent}) == len(sent)  # the request's max_stocks=1 held per account
    assert summary["total_investment"] == sum(i.quantity * (i.price or 0) for i in sent)
    assert summary["strategies_created"] > 0 and summary["message"] == "자동매매 실행 완료"
