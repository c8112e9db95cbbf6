"""A level crossed while no watcher ran still sells: when the price watch (re)starts in the session it reads
each watched stock's day range from the broker's quote (ka10001 high/low) and runs it through the exit book,
so a stop or take-profit touched and given back while the process was dead is not lost. Real watch task,
simulator over real HTTP, SQLite and PostgreSQL.

Same market as tests/trading/test_resting_stops.py: entry 50,000; stop 47,500; preserve 52,000; take-profit
54,000; 20 shares (preserve 10).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, time
from pathlib import Path

import pytest
import sqlalchemy as sa

from autotrade.domain.exits import StrategyStatus
from autotrade.domain.krx import KST
from autotrade.domain.models import Side, Tier
from autotrade.sim.server import RunningSimulator
from autotrade.store.models import OrderIntentRow, ThreeTierStrategy
from tests.broker.test_feed import eventually
from tests.trading import checks
from tests.trading.test_resting_stops import CODE, D2, Q, bought, broker_orders, sim, strategy

__all__ = ["sim"]  # the simulator fixture, shared with the resting-stop tests


def _sells(w: object) -> list[dict[str, object]]:
    return [o for o in broker_orders(w) if o["side"] == "SELL"]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "tier"),
    [
        pytest.param((54_500, 51_000), Tier.TAKE_PROFIT, id="take-profit-touched-and-given-back"),
        pytest.param((55_000, 47_000, 51_000), Tier.STOP_LOSS, id="both-sides-touched-the-stop-wins"),
    ],
)
async def test_a_level_crossed_while_no_watcher_ran_sells_when_the_watch_starts(
    sim: RunningSimulator, db_url: str, tmp_path: Path, path: tuple[int, ...], tier: Tier
) -> None:
    w = await bought(sim, db_url, tmp_path, resting=False)
    try:
        # 10:00 on day two, no watcher: the price goes through a level and comes back.
        w.at(D2, time(10, 0))
        for price in path:
            sim.admin.set_price(CODE, price)
        assert _sells(w) == []
        w.restart()  # the new process the schedule starts
        result = await w.trading_session(D2, until=time(10, 2))
        (sell,) = _sells(w)
        assert (sell["trade_type"], sell["quantity"], sell["filled"]) == ("3", Q, Q)
        with w.db.unit_of_work() as s:
            intents = s.scalars(sa.select(OrderIntentRow).where(OrderIntentRow.side == Side.SELL)).all()
            assert [i.tier for i in intents] == [tier]
        closed = StrategyStatus.STOPPED if tier is Tier.STOP_LOSS else StrategyStatus.COMPLETED
        assert strategy(w).status is closed
        assert result["sells_fired"] == 1
        # The sell stands on prices the watch read (the day range), like any other.
        assert checks.tiers_follow_prices(w) == []
        # Another start the same day reads the same range: nothing sells twice.
        w.restart()
        await w.trading_session(D2, until=time(10, 4))
        assert len(_sells(w)) == 1
    finally:
        await w.aclose()
        w.db.dispose()


async def test_a_strategy_armed_after_the_open_is_not_held_to_earlier_prices(
    sim: RunningSimulator, db_url: str, tmp_path: Path
) -> None:
    """The day's extremes may predate a strategy armed during the session: they fire nothing for it."""
    w = await bought(sim, db_url, tmp_path, resting=False)
    try:
        w.at(D2, time(10, 0))
        for price in (54_500, 51_000):
            sim.admin.set_price(CODE, price)
        with w.db.unit_of_work() as s:
            row = s.scalars(sa.select(ThreeTierStrategy)).one()
            row.armed_at = datetime.combine(D2, time(9, 30), tzinfo=KST)
        w.restart()
        result = await w.trading_session(D2, until=time(10, 2))
        assert (_sells(w), result["sells_fired"]) == ([], 0)
        assert strategy(w).status is StrategyStatus.ACTIVE
    finally:
        await w.aclose()
        w.db.dispose()


async def test_a_level_crossed_while_the_feed_was_down_sells_when_it_reconnects(
    sim: RunningSimulator, db_url: str, tmp_path: Path
) -> None:
    """The watch runs; its socket drops and cannot log in again for a while. Meanwhile the price goes through
    the take-profit and back, so no tick of it ever reaches the watch. When the feed logs in again the watch
    reads the day's range once more (a gap in its ticks) and the take-profit sells."""
    w = await bought(sim, db_url, tmp_path, resting=False)
    try:
        w.watch_speed = 60.0  # 10:00-10:15 in 15 s of wall time: room to drop the feed in between
        w.restart()
        w.at(D2, time(10, 0))
        session = asyncio.create_task(w.trading_session(D2, until=time(10, 15)))

        def feed_up() -> bool:  # a socket open with the stock registered
            return any(CODE in codes for codes in sim.simulator.feed_registrations)

        await eventually(feed_up, within=10.0)
        # The feed server restarts, and for a while every socket closes as soon as it registers a code.
        sim.admin.add_fault("ws_disconnect", path="/api/dostk/websocket")
        assert sim.admin.drop_websockets() >= 1
        await eventually(lambda: not feed_up(), within=10.0)
        for price in (54_500, 51_000):
            sim.admin.set_price(CODE, price)
        assert _sells(w) == []
        sim.admin.clear_faults()  # the next login holds
        await eventually(feed_up, within=10.0)  # back
        result = await session
        (sell,) = _sells(w)
        assert (sell["trade_type"], sell["quantity"], sell["filled"]) == ("3", Q, Q)
        assert result["gap_catch_ups"] >= 1 and result["sells_fired"] == 1, result
        with w.db.unit_of_work() as s:
            intents = s.scalars(sa.select(OrderIntentRow).where(OrderIntentRow.side == Side.SELL)).all()
            assert [i.tier for i in intents] == [Tier.TAKE_PROFIT]
        assert strategy(w).status is StrategyStatus.COMPLETED
        assert checks.tiers_follow_prices(w) == []
    finally:
        await w.aclose()
        w.db.dispose()
