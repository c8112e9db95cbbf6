"""The operator's execute over the real service (``build_deps``) and the stack: a dry run orders nothing, a
holiday is answered without running anything, a run longer than the wait answers 202 with the run's name
(and still completes), and the evening flow refuses limits it does not know or that are not positive."""

from __future__ import annotations

import asyncio
from datetime import date, time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from autotrade.api.app import create_app
from autotrade.api.service import build_deps
from autotrade.demo.stack import Stack
from autotrade.store.models import OrderIntentRow, TradingSignal, User
from flows.evening_signal_and_buy import evening_signal_and_buy
from tests.flows.conftest import DAY1

PASSWORD = "correct horse battery"
HOLIDAY = date(2026, 12, 25)


def client_of(stack: Stack) -> httpx.AsyncClient:
    app = create_app(build_deps(stack.runtime))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=120)


async def operator(client: httpx.AsyncClient, stack: Stack) -> dict[str, str]:
    r = await client.post("/api/auth/signup", json={"email": "ops@example.com", "password": PASSWORD})
    assert r.status_code == 201, r.text
    with stack.db.unit_of_work() as s:
        s.execute(sa.update(User).where(User.email == "ops@example.com").values(role="operator"))
    r = await client.post("/api/auth/login", json={"email": "ops@example.com", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def scan_of(stack: Stack) -> list[dict[str, Any]]:
    stocks = stack.sim.admin.stocks()
    picked = sorted(c for c, s in stocks.items() if 5_000 <= s["price"] <= 200_000)[:3]
    return [{"code": c, "name": stocks[c]["name"], "score": 8.5, "current_price": int(stocks[c]["price"]),
             "reasons": ["거래량 급증"]} for c in picked]  # fmt: skip


def counts(stack: Stack) -> tuple[int, int, int]:
    """(intents, intents sent to the broker, signals) in the database; orders at the broker."""
    with stack.db.unit_of_work() as s:
        intents = s.scalar(sa.select(sa.func.count()).select_from(OrderIntentRow)) or 0
        sent = s.scalar(sa.select(sa.func.count()).where(OrderIntentRow.order_no.is_not(None))) or 0
        signals = s.scalar(sa.select(sa.func.count()).select_from(TradingSignal)) or 0
    return intents, sent, signals


async def test_a_dry_run_plans_and_orders_nothing(stack: Stack) -> None:
    stack.at(DAY1, time(15, 40))
    async with client_of(stack) as client:
        op = await operator(client, stack)
        body = {"scan_results": scan_of(stack), "trading_day": DAY1.isoformat(), "dry_run": True}
        r = await client.post("/api/auto-trading/execute", json=body, headers=op)
    assert r.status_code == 200, r.text
    summary = r.json()
    assert summary["message"] == "자동매매 실행 완료 (모의 실행)", summary
    assert summary["strategies_created"] == 0, summary
    _, sent, _ = counts(stack)
    assert sent == 0 and len(stack.sim.engine.orders) == 0  # nothing reached the broker
    # The plan was made: the summary counts what would be bought (3 stocks for each of 2 users).
    assert summary["executed_orders"] == 6 and summary["total_investment"] > 0, summary
    assert counts(stack) == (0, 0, 0)  # and left no intent or signal behind


async def test_a_holiday_is_answered_without_a_run(stack: Stack) -> None:
    async with client_of(stack) as client:
        op = await operator(client, stack)
        body = {"scan_results": scan_of(stack), "trading_day": HOLIDAY.isoformat()}
        r = await client.post("/api/auto-trading/execute", json=body, headers=op)
    assert r.status_code == 200, r.text
    summary = r.json()
    assert summary["success"] is False and summary["executed_orders"] == 0, summary
    assert summary["message"].startswith(f"{HOLIDAY}: "), summary
    assert counts(stack) == (0, 0, 0) and len(stack.sim.engine.orders) == 0


async def test_a_run_longer_than_the_wait_answers_202_and_completes(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOTRADE_API_EXECUTE_WAIT_SECONDS", "0")
    stack.at(DAY1, time(15, 40))
    async with client_of(stack) as client:
        op = await operator(client, stack)
        body = {"scan_results": scan_of(stack), "trading_day": DAY1.isoformat()}
        r = await client.post("/api/auto-trading/execute", json=body, headers=op)
        assert r.status_code == 202, r.text
        started = r.json()
        assert started["message"] == "flow run started" and started["success"] is False
        assert started["run_id"].startswith(f"api-{DAY1:%Y%m%d}-"), started
        # The run goes on after the answer, in this process: wait for Prefect to see it end.
        final = await run_state(started["run_id"])
    assert final is not None and final.is_completed(), final
    intents, sent, _ = counts(stack)
    assert sent == intents == len(stack.sim.engine.orders) == 6, (intents, sent)  # 3 stocks, 2 users


async def run_state(name: str, seconds: float = 90.0) -> Any:
    """The final state of the flow run called ``name`` (None if it has not ended in time)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    async with get_client() as client:
        for _ in range(int(seconds * 10)):
            named = FlowRunFilter(name=FlowRunFilterName(any_=[name]))
            runs = await client.read_flow_runs(flow_run_filter=named)
            if runs and runs[0].state is not None and runs[0].state.is_final():
                return runs[0].state
            await asyncio.sleep(0.1)
    return None


@pytest.mark.parametrize(
    "limits",
    [{"max_daily_investment": 0}, {"max_stock_count": -1}, {"max_daily_loss": 1_000}],
    ids=["zero", "negative", "unknown"],
)
async def test_the_evening_flow_refuses_limits_it_cannot_apply(stack: Stack, limits: dict[str, int]) -> None:
    stack.at(DAY1, time(15, 40))
    payload = {"trading_day": DAY1.isoformat(), "generated_at": stack.now().isoformat(),
               "scan_results": scan_of(stack)}  # fmt: skip
    state = await evening_signal_and_buy(
        trading_day=DAY1, scan_payload=payload, limits=limits, return_state=True
    )
    assert state.is_failed()
    with pytest.raises(ValueError, match="limits: only positive"):
        await state.result()
    assert counts(stack) == (0, 0, 0) and len(stack.sim.engine.orders) == 0
