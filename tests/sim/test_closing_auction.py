"""The simulator's closing auction (15:20–15:30), through the real client over real HTTP: no trade prints
while orders are collected; at 15:30 one price (the close) is set and every collected market order trades at
it; a resting stop is checked against that single print."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, time

import pytest

from autotrade.broker import TradeType
from autotrade.domain.krx import KST, floor_to_tick, price_limits
from autotrade.sim.server import RunningSimulator, running_simulator
from tests.sim.test_stop_limit import _session  # the client and session on the fixture's key

DAY = datetime(2026, 11, 24, tzinfo=KST).date()
CODE = "005930"
ACCOUNT = "7000000001"


def _at(hh: int, mm: int) -> datetime:
    return datetime.combine(DAY, time(hh, mm), tzinfo=KST)


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    # A lively walk: 1 % a step, so ten steps' worth of auction move the close for certain.
    with running_simulator(seed=11, start=_at(9, 30), volatility=0.01, jump_probability=0.0) as s:
        s.admin.add_stocks([{"code": CODE, "name": "삼성전자", "prev_close": 50_000}])
        s.admin.create_account(ACCOUNT, "u", 100_000_000)
        s.key = s.admin.create_appkey(ACCOUNT)  # type: ignore[attr-defined]
        yield s


def _order(sim: RunningSimulator, order_no: str) -> dict[str, object]:
    return next(o for o in sim.admin.account(ACCOUNT)["orders"] if o["order_no"] == order_no)


async def test_orders_in_the_closing_auction_trade_once_at_the_close(sim: RunningSimulator) -> None:
    client, s = await _session(sim)
    try:
        await s.buy(CODE, 20, None, TradeType.MARKET)
        sim.admin.set_clock(_at(15, 20))
        frozen = sim.engine.stocks[CODE].price
        ticks: list[int] = []
        sim.engine.price_listeners.append(lambda _s, price, _now: ticks.append(price))
        sim.admin.set_clock(_at(15, 25))
        # Collected, not traded: the market sell waits for the auction's single price.
        ack = await s.sell(CODE, 10, None, TradeType.MARKET)
        sim.admin.set_clock(_at(15, 29))
        assert (ticks, sim.engine.stocks[CODE].price) == ([], frozen)
        assert (_order(sim, ack.order_no)["status"], _order(sim, ack.order_no)["filled"]) == ("OPEN", 0)
        sim.admin.set_clock(_at(15, 30))
        close = sim.engine.stocks[CODE].close
        assert close is not None and close != frozen and ticks == [close]
        o = _order(sim, ack.order_no)
        assert (o["status"], o["filled"], o["filled_amount"]) == ("FILLED", 10, 10 * close)
    finally:
        await client.aclose()


async def test_a_resting_stop_is_checked_against_the_close_not_during_the_auction(
    sim: RunningSimulator,
) -> None:
    """A stop placed at 15:25 far above the frozen price (the continuous session would have triggered it at
    once) waits through the auction and sells on the close's single print, at the close."""
    client, s = await _session(sim)
    try:
        await s.buy(CODE, 10, None, TradeType.MARKET)
        sim.admin.set_clock(_at(15, 25))
        frozen = sim.engine.stocks[CODE].price
        lower, upper = price_limits(50_000)
        trigger = min(floor_to_tick(int(frozen * 1.2)), upper)  # 6 sd of the auction move
        limit = max(floor_to_tick(int(frozen * 0.8)), lower)
        ack = await s.sell(CODE, 10, limit, TradeType.STOP_LIMIT, stop_price=trigger)
        sim.admin.set_clock(_at(15, 29))
        assert _order(sim, ack.order_no)["filled"] == 0
        sim.admin.set_clock(_at(15, 30))
        close = sim.engine.stocks[CODE].close
        assert close is not None and close <= trigger
        o = _order(sim, ack.order_no)
        assert (o["status"], o["filled"], o["filled_amount"]) == ("FILLED", 10, 10 * close)
    finally:
        await client.aclose()
