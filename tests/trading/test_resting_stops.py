"""Stops resting at the broker (``resting_stop`` setting), against the simulator over real HTTP, on SQLite and
PostgreSQL: the stop fills with no watcher at all and the position closes on reconciliation; preserve
shrinks the resting stop and the stop then sells only the rest; a take-profit racing a resting stop's fill
sells no share twice; the stop rests again the morning after the broker ended it; with the setting off
nothing rests.

One stock at 50,000 that moves only when a test sets its price (no drift, no jumps, no opening gap). Entry
at the close, 50,000: stop 50,000 x 0.95 = 47,500; preserve x 1.04 = 52,000; take-profit x 1.08 = 54,000;
the resting stop's limit 5 ticks of 50 below the trigger: 47,250. The buy: 1,000,000 per stock at 50,000
is 20 shares (the cash, 10,000,000, easily pays the fee); preserve sells 20 // 2 = 10.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from autotrade.domain.exits import StrategyStatus
from autotrade.domain.krx import KST
from autotrade.domain.models import Side, Tier
from autotrade.domain.orders import IntentStatus
from autotrade.sim.server import RunningSimulator, running_simulator
from autotrade.store.models import ConditionalOrder, OrderIntentRow, ThreeTierStrategy, TradeRecordRow
from autotrade.trading.resting_stops import SOLD_BY_RESTING_STOP
from tests.trading import checks
from tests.trading.harness import Trader, World, make_world

D1, D2, D3 = date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 25)
CODE = "300010"
ACCOUNT = "5002000011"
Q, HALF = 20, 10


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    start = datetime.combine(D1, time(15, 0), tzinfo=KST)
    with running_simulator(seed=3, start=start, volatility=0.0, jump_probability=0.0, gap_volatility=0.0,
                           after_hours_fill_rate=1.0) as s:  # fmt: skip
        s.admin.add_stocks([{"code": CODE, "name": "휴식정지", "prev_close": 50_000}])
        s.admin.set_price(CODE, 50_000)
        yield s


async def bought(sim: RunningSimulator, db_url: str, tmp_path: Path, *, resting: bool = True) -> World:
    """D1 evening: the buy fills after hours at 50,000; D2 09:05 the morning reconciliation (it places the
    resting stop when the setting is on)."""
    w = make_world(sim, db_url, tmp_path, [Trader("kim", ACCOUNT, 10_000_000, 5_000_000)],
                   max_per_stock=1_000_000, resting_stop=resting, resting_stop_limit_ticks=5)  # fmt: skip
    await w.evening(D1, w.scan_for([CODE], [9.0]))
    w.at(D2, time(9, 5))
    await w.reconcile_all(D2)
    return w


def broker_orders(w: World) -> list[dict[str, Any]]:
    return [o for o in w.sim.admin.account(ACCOUNT)["orders"] if o["code"] == CODE]


def resting_at_broker(w: World) -> list[dict[str, Any]]:
    return [o for o in broker_orders(w) if o["trade_type"] == "28" and o["status"] == "OPEN"]


def sold_at_broker(w: World) -> int:
    return sum(int(o["filled"]) for o in broker_orders(w) if o["side"] == "SELL")


def strategy(w: World) -> ThreeTierStrategy:
    with w.db.unit_of_work() as s:
        row = s.scalars(sa.select(ThreeTierStrategy)).one()
        s.expunge(row)
        return row


def at(day: date, t: time) -> datetime:
    return datetime.combine(day, t, tzinfo=KST)


async def test_the_stop_fills_at_the_broker_with_no_watcher_and_the_position_closes(
    sim: RunningSimulator, db_url: str, tmp_path: Path
) -> None:
    """No price watch all day. At 11:00 the price trades at 47,400, through the 47,500 trigger and above the
    47,250 limit: the broker sells all 20 at 47,400. The close's reconciliation finds the fill: STOPPED, a
    stop-loss trade of 20 x 47,400 = 948,000, and the broker and our books agree."""
    w = await bought(sim, db_url, tmp_path)
    try:
        [rest] = resting_at_broker(w)
        assert (rest["quantity"], rest["price"], rest["side"]) == (Q, 47_250, "SELL")
        with w.db.unit_of_work() as s:
            stop_row = s.scalars(
                sa.select(ConditionalOrder).where(ConditionalOrder.order_type == Tier.STOP_LOSS)
            ).one()
            assert stop_row.order_no == rest["order_no"]
        w.at(D2, time(11, 0))
        sim.admin.set_price(CODE, 47_400)
        w.at(D2, time(15, 30))
        await w.reconcile_all(D2)
        st = strategy(w)
        assert (st.status, st.held_quantity) == (StrategyStatus.STOPPED, 0)
        with w.db.unit_of_work() as s:
            [trade] = s.scalars(sa.select(TradeRecordRow).where(TradeRecordRow.action != "BUY")).all()
            assert (trade.quantity, trade.price, trade.amount) == (Q, 47_400, 948_000)
        assert sold_at_broker(w) == Q
        assert checks.agreement(w) == [] and checks.traceability(w) == []
    finally:
        await w.aclose()


async def test_with_the_setting_off_nothing_rests_and_an_unwatched_stop_does_not_sell(
    sim: RunningSimulator, db_url: str, tmp_path: Path
) -> None:
    """The same day with ``resting_stop`` off: no order rests after the morning, and with no watcher the
    drop to 47,400 sells nothing: the position is still held, 20 shares."""
    w = await bought(sim, db_url, tmp_path, resting=False)
    try:
        assert resting_at_broker(w) == []
        w.at(D2, time(11, 0))
        sim.admin.set_price(CODE, 47_400)
        w.at(D2, time(15, 30))
        await w.reconcile_all(D2)
        st = strategy(w)
        assert (st.status, st.held_quantity, sold_at_broker(w)) == (StrategyStatus.ACTIVE, Q, 0)
    finally:
        await w.aclose()


async def test_preserve_shrinks_the_resting_stop_then_the_stop_sells_only_the_rest(
    sim: RunningSimulator, db_url: str, tmp_path: Path
) -> None:
    """At 52,000 the watch fires preserve for 10. First 10 of the 20 resting shares are cancelled (the order
    keeps its number, 10 left working), then the market sell of 10 fills at 52,000. Later 47,400 with no
    watch: the broker's stop sells the other 10, nothing more. 10 + 10 = 20 sold in all; STOPPED."""
    w = await bought(sim, db_url, tmp_path)
    try:
        [rest] = resting_at_broker(w)
        w.at(D2, time(10, 0))
        sim.admin.set_price(CODE, 52_000)
        await w.watch_once(D2)
        [still] = resting_at_broker(w)
        assert still["order_no"] == rest["order_no"]
        state = w.sim.engine.orders[rest["order_no"]]
        assert state.remaining == Q - HALF
        assert sold_at_broker(w) == HALF
        assert strategy(w).status is StrategyStatus.PRESERVE_TRIGGERED
        w.at(D2, time(11, 0))
        sim.admin.set_price(CODE, 47_400)
        assert sold_at_broker(w) == Q
        w.at(D2, time(15, 30))
        await w.reconcile_all(D2)
        st = strategy(w)
        assert (st.status, st.held_quantity, st.preserve_sold) == (StrategyStatus.STOPPED, 0, HALF)
        sells = [o for o in broker_orders(w) if o["side"] == "SELL" and not o["orig_order_no"]]
        assert sorted(int(o["filled"]) for o in sells) == [HALF, Q - HALF]
        assert checks.agreement(w) == [] and checks.traceability(w) == []
    finally:
        await w.aclose()


async def test_a_take_profit_racing_the_resting_stop_sells_no_share_twice(
    sim: RunningSimulator, db_url: str, tmp_path: Path
) -> None:
    """The watch saw 54,000 (take-profit for all 20) a moment before the price fell to 47,400 and the broker's
    stop sold the 20. The take-profit first cancels the resting stop: the cancel is refused (filled), the
    broker's orders show the fill, the position is STOPPED, and the take-profit is never sent."""
    w = await bought(sim, db_url, tmp_path)
    try:
        w.at(D2, time(11, 0))
        seen = w.now()
        sim.admin.set_price(CODE, 47_400)  # the broker's stop fills now
        for sell in w.rt.engine.on_price(CODE, 54_000, seen):  # the watch's tick from just before
            await w.send_sell(sell, D2)
        assert sold_at_broker(w) == Q
        st = strategy(w)
        assert (st.status, st.held_quantity) == (StrategyStatus.STOPPED, 0)
        with w.db.unit_of_work() as s:
            [tp] = s.scalars(sa.select(OrderIntentRow).where(OrderIntentRow.tier == Tier.TAKE_PROFIT)).all()
            assert (tp.order_no, tp.status, tp.last_error) == (
                None,
                IntentStatus.EXPIRED,
                SOLD_BY_RESTING_STOP,
            )
        w.at(D2, time(15, 30))
        await w.reconcile_all(D2)
        assert sold_at_broker(w) == Q
        assert checks.agreement(w) == [] and checks.traceability(w) == []
    finally:
        await w.aclose()


async def test_a_take_profit_cancels_the_resting_stop_first_then_sells(
    sim: RunningSimulator, db_url: str, tmp_path: Path
) -> None:
    """At 54,000 the take-profit cancels the whole resting stop (20 shares freed), then sells 20 at 54,000;
    nothing rests afterwards and a later fall sells nothing more."""
    w = await bought(sim, db_url, tmp_path)
    try:
        w.at(D2, time(10, 0))
        sim.admin.set_price(CODE, 54_000)
        await w.watch_once(D2)
        assert resting_at_broker(w) == []
        assert sold_at_broker(w) == Q
        sim.admin.set_price(CODE, 47_400)
        assert sold_at_broker(w) == Q
        assert strategy(w).status is StrategyStatus.COMPLETED
    finally:
        await w.aclose()


async def test_the_stop_rests_again_the_morning_after_the_broker_ended_it(
    sim: RunningSimulator, db_url: str, tmp_path: Path
) -> None:
    """D2's resting stop expires with the day (18:00), and this process never looked again that day (no close
    reconciliation); D3's morning reconciliation places a new one for the 20 shares, and our books end D2's
    as EXPIRED."""
    w = await bought(sim, db_url, tmp_path)
    try:
        [first] = resting_at_broker(w)
        w.at(D2, time(18, 1))
        assert resting_at_broker(w) == []
        w.at(D3, time(9, 5))
        await w.reconcile_all(D3)
        [second] = resting_at_broker(w)
        assert second["order_no"] != first["order_no"] and second["day"] == D3.isoformat()
        assert second["quantity"] == Q
        with w.db.unit_of_work() as s:
            rows = s.scalars(
                sa.select(OrderIntentRow)
                .where(OrderIntentRow.side == Side.SELL, OrderIntentRow.trade_type == "STOP_LIMIT")
                .order_by(OrderIntentRow.id)
            ).all()
            assert [(r.trading_day, r.status) for r in rows] == [
                (D2, IntentStatus.EXPIRED),
                (D3, IntentStatus.ACCEPTED),
            ]
    finally:
        await w.aclose()
