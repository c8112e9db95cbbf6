"""The simulator's stop-limit order (trde_tp 28) through the real client over real HTTP: it rests without
trading until the last trade price reaches its trigger (cond_uv), then works as a limit order at ord_uv;
the inquiries show its trigger (stop_pric); a partial cancel, a modify (mdfy_qty, mdfy_cond_uv) and the
day-end expiry end or move it like any working order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, time

import pytest
from pydantic import SecretStr

from autotrade.broker import Credentials, KiwoomClient, KiwoomSession, TokenManager, TradeType
from autotrade.domain.krx import KST
from autotrade.sim.server import RunningSimulator, running_simulator

START = datetime(2026, 11, 24, 9, 30, tzinfo=KST)
CODE = "005930"


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    with running_simulator(seed=5, start=START, volatility=0.0, jump_probability=0.0) as s:
        s.admin.add_stocks([{"code": CODE, "name": "삼성전자", "prev_close": 50_000}])
        s.admin.set_price(CODE, 50_000)
        s.admin.create_account("7000000001", "u", 10_000_000)
        key = s.admin.create_appkey("7000000001")
        s.key = key  # type: ignore[attr-defined]
        yield s


async def _session(sim: RunningSimulator) -> tuple[KiwoomClient, KiwoomSession]:
    key = sim.key  # type: ignore[attr-defined]

    async def creds() -> Credentials:
        return Credentials(app_key=SecretStr(key["appkey"]), app_secret=SecretStr(key["secretkey"]))

    client = KiwoomClient(sim.base_url, rate_per_second=1000, burst=1000)
    return client, KiwoomSession(client, "k", TokenManager(client, "k", creds, clock=sim.engine.now))


async def _bought(session: KiwoomSession, qty: int = 10) -> None:
    await session.buy(CODE, qty, None, TradeType.MARKET)


def _order(sim: RunningSimulator, order_no: str) -> dict[str, object]:
    return next(o for o in sim.admin.account("7000000001")["orders"] if o["order_no"] == order_no)


async def test_rests_until_the_trigger_then_sells_at_the_market_above_its_limit(
    sim: RunningSimulator,
) -> None:
    """Stop 47,500, limit 47,000 (10 ticks of 50 below). At 47,550 nothing trades; at 47,450 (through the
    trigger, above the limit) all 10 shares sell at 47,450, the last trade, not at the limit."""
    client, s = await _session(sim)
    try:
        await _bought(s)
        ack = await s.sell(CODE, 10, 47_000, TradeType.STOP_LIMIT, stop_price=47_500)
        [row] = await s.unfilled_orders()
        assert (row.order_no, row.stop_price, row.price, row.unfilled_quantity) == (
            ack.order_no,
            47_500,
            47_000,
            10,
        )
        sim.admin.set_price(CODE, 47_550)
        assert _order(sim, ack.order_no)["filled"] == 0
        sim.admin.set_price(CODE, 47_450)
        o = _order(sim, ack.order_no)
        assert (o["status"], o["filled"], o["filled_amount"]) == ("FILLED", 10, 474_500)
        [done] = [f for f in await s.filled_orders() if f.order_no == ack.order_no]
        assert (done.filled_quantity, done.fill_price, done.stop_price) == (10, 47_450, 47_500)
    finally:
        await client.aclose()


async def test_a_gap_below_the_limit_leaves_it_resting_at_the_limit(sim: RunningSimulator) -> None:
    """Trigger 47,500, limit 47,000: a trade at 46,000 triggers it but is below the limit, so nothing
    sells; back at 47,000 it sells at its limit."""
    client, s = await _session(sim)
    try:
        await _bought(s)
        ack = await s.sell(CODE, 10, 47_000, TradeType.STOP_LIMIT, stop_price=47_500)
        sim.admin.set_price(CODE, 46_000)
        assert _order(sim, ack.order_no)["filled"] == 0
        sim.admin.set_price(CODE, 47_000)
        o = _order(sim, ack.order_no)
        assert (o["filled"], o["filled_amount"]) == (10, 470_000)
    finally:
        await client.aclose()


async def test_partial_cancel_modify_and_day_end(sim: RunningSimulator) -> None:
    """10 shares resting; cancel 4 (cncl_qty) leaves 6 open and reserved; a modify of those 6 to trigger
    48,000 / limit 47,500 moves them to a new order number and ends the original; the trigger then fires at
    48,000 for 6 shares. A second stop placed after it expires at 18:00 unfilled."""
    client, s = await _session(sim)
    try:
        await _bought(s)
        ack = await s.sell(CODE, 10, 47_000, TradeType.STOP_LIMIT, stop_price=47_500)
        await s.cancel(ack.order_no, CODE, 4)
        [row] = await s.unfilled_orders()
        assert (row.quantity, row.unfilled_quantity) == (10, 6)
        assert sim.engine.sellable(sim.engine.accounts["7000000001"], CODE) == 4
        new = await s.modify(ack.order_no, CODE, 6, 47_500, stop_price=48_000)
        assert _order(sim, ack.order_no)["status"] == "CANCELLED"
        [row] = await s.unfilled_orders()
        assert (row.order_no, row.stop_price, row.price, row.unfilled_quantity) == (
            new.order_no,
            48_000,
            47_500,
            6,
        )
        sim.admin.set_price(CODE, 48_000)
        assert _order(sim, new.order_no)["filled"] == 6
        late = await s.sell(CODE, 4, 40_000, TradeType.STOP_LIMIT, stop_price=41_000)
        sim.admin.set_clock(datetime.combine(START.date(), time(18, 0), tzinfo=KST))
        assert _order(sim, late.order_no)["status"] == "EXPIRED"
    finally:
        await client.aclose()
