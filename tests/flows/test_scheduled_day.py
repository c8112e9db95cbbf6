"""The flows as a schedule starts them: with no ``trading_day`` parameter (prefect.yaml passes none), the day
is today in Seoul on the runtime's clock. A Sunday run skips; a weekday run trades that day."""

from __future__ import annotations

from datetime import date, time

import sqlalchemy as sa

from autotrade.demo.stack import Stack
from autotrade.domain.models import Side
from autotrade.store.models import OrderIntentRow
from flows.daily_report import daily_report
from flows.evening_signal_and_buy import evening_signal_and_buy
from flows.intraday_reconcile import intraday_reconcile
from flows.morning_fill_and_arm import morning_fill_and_arm
from tests.flows.conftest import DAY1, evening_scan

SUNDAY = date(2026, 11, 22)


async def test_a_scheduled_run_trades_the_day_of_the_runtime_clock(stack: Stack) -> None:
    evening_scan(stack, DAY1)
    state = await evening_signal_and_buy(return_state=True)  # as the 15:40 schedule starts it
    assert state.is_completed(), state.message
    result = await state.result()
    assert result["trading_day"] == DAY1.isoformat()
    assert result["orders"] > 0
    with stack.db.unit_of_work() as s:
        days = set(s.scalars(sa.select(OrderIntentRow.trading_day).where(OrderIntentRow.side == Side.BUY)))
    assert days == {DAY1}


async def test_a_scheduled_run_on_a_sunday_skips_every_flow(stack: Stack) -> None:
    stack.at(SUNDAY, time(9, 5))
    for flow in (morning_fill_and_arm, intraday_reconcile, evening_signal_and_buy, daily_report):
        state = await flow(return_state=True)
        assert state.is_completed(), (flow.name, state.message)
        result = await state.result()
        assert result == {"trading_day": SUNDAY.isoformat(), "skipped": "not a KRX trading day"}, flow.name
    with stack.db.unit_of_work() as s:
        assert s.scalar(sa.select(sa.func.count(OrderIntentRow.id))) == 0
