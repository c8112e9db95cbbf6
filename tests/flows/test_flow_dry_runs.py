"""Each flow's dry run after a real evening: the morning arms from the database without confirming fills or
telling anyone, the intraday run only reports its watch list (the clock does not move, nothing is sold),
the report is built without asking the broker for the day's equity."""

from __future__ import annotations

import io
from datetime import time

import sqlalchemy as sa

from autotrade.demo.stack import Stack
from autotrade.store.models import EquitySnapshot, ThreeTierStrategy
from flows.daily_report import daily_report
from flows.evening_signal_and_buy import evening_signal_and_buy
from flows.intraday_reconcile import intraday_reconcile
from flows.morning_fill_and_arm import morning_fill_and_arm
from tests.flows.conftest import DAY1, DAY2, evening_scan


async def test_every_flow_dry_run_changes_nothing(stack: Stack, notes: io.StringIO) -> None:
    evening_scan(stack, DAY1)
    result = await evening_signal_and_buy(trading_day=DAY1)
    assert result["positions_armed"] > 0
    with stack.db.unit_of_work() as s:
        positions = s.scalar(sa.select(sa.func.count(ThreeTierStrategy.id))) or 0
    orders = len(stack.sim.engine.orders)

    stack.at(DAY2, time(9, 5))
    mark = len(notes.getvalue())
    morning = await morning_fill_and_arm(trading_day=DAY2, dry_run=True)
    assert morning["armed"] == positions and morning["users_notified"] == 0, morning
    assert "EXITS_ARMED" not in notes.getvalue()[mark:]

    before = stack.now()
    watch = await intraday_reconcile(trading_day=DAY2, dry_run=True)
    assert watch == {"trading_day": DAY2.isoformat(), "watched": positions, "dry_run": True}
    assert stack.now() == before  # no watch ran: the clock stayed at 09:05
    assert len(stack.sim.engine.orders) == orders  # nothing sold

    stack.at(DAY2, time(16, 30))
    report = await daily_report(trading_day=DAY2, dry_run=True)
    assert report["users"] == 2
    with stack.db.unit_of_work() as s:
        snapshots = s.scalar(
            sa.select(sa.func.count()).where(EquitySnapshot.trading_day == DAY2, EquitySnapshot.equity > 0)
        )
    assert snapshots == 0  # the broker was not asked for today's equity
