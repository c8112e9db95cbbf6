"""What the flows tell users and the operator: across an evening, a morning, a session and the report, each
user hears of their orders, their fills, their armed exits, a stop that fired and their report, and the
operator of the report, through the console notifier of the stack (the ``notes`` buffer)."""

from __future__ import annotations

import io
import re
from datetime import time

import sqlalchemy as sa

from autotrade.demo.stack import Stack
from autotrade.domain.exits import StrategyStatus
from autotrade.store.daily_bars import read_bars
from autotrade.store.models import ThreeTierStrategy
from flows.daily_report import daily_report
from flows.evening_signal_and_buy import evening_signal_and_buy
from flows.intraday_reconcile import intraday_reconcile
from flows.morning_fill_and_arm import morning_fill_and_arm
from tests.flows.conftest import DAY1, DAY2, evening_scan

HEADER = re.compile(r"^── (\w+) (\w+) \((.*)\)$", re.MULTILINE)


def told(notes: io.StringIO, since: int = 0) -> list[tuple[str, str, str]]:
    """(kind, audience, body) of each notification written after offset ``since``."""
    text = notes.getvalue()[since:]
    heads = list(HEADER.finditer(text))
    out = []
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        out.append((m.group(2), m.group(3), text[m.end() : end]))
    return out


def audiences(notes: io.StringIO, kind: str, since: int = 0) -> list[str]:
    return sorted(a for k, a, _ in told(notes, since) if k == kind)


async def test_each_flow_tells_the_users_and_the_operator(stack: Stack, notes: io.StringIO) -> None:
    users = sorted(u for u, _ in stack.users)
    assert len(users) == 2

    evening_scan(stack, DAY1)
    result = await evening_signal_and_buy(trading_day=DAY1)
    assert result["orders"] > 0 and result["positions_armed"] > 0
    with stack.db.unit_of_work() as s:
        rows = s.scalars(
            sa.select(ThreeTierStrategy).where(ThreeTierStrategy.status == StrategyStatus.ACTIVE)
        ).all()
        holders = sorted({r.user_id for r in rows})
        target = min(rows, key=lambda r: r.id)
        code, stop, victim = target.code, target.stop_loss_price, target.user_id
    assert holders
    # The evening (orders, then the after-hours fills confirmed and the exits armed): every user with
    # orders hears of them, every user with a position once of their fills and once of their exits.
    assert audiences(notes, "BUY_ORDERS_PLACED") == [f"user:{u}" for u in users]
    assert audiences(notes, "FILLS_CONFIRMED") == [f"user:{u}" for u in holders]
    assert audiences(notes, "EXITS_ARMED") == [f"user:{u}" for u in holders]
    (exits_text,) = [b for k, a, b in told(notes) if k == "EXITS_ARMED" and a == f"user:{victim}"]
    assert code in exits_text

    # The morning finds nothing newly filled: no fill is told twice.
    mark = len(notes.getvalue())
    stack.at(DAY2, time(9, 5))
    await morning_fill_and_arm(trading_day=DAY2)
    assert audiences(notes, "FILLS_CONFIRMED", mark) == []

    # One position's stock opens well under its stop: the watch sells it and its owner is told the tier.
    mark = len(notes.getvalue())
    stack.sim.admin.set_price(code, stop - max(stop // 50, 10))
    watch = await intraday_reconcile(trading_day=DAY2)
    assert watch["sells_fired"] >= 1, watch
    tiers = [(a, b) for k, a, b in told(notes, mark) if k == "TIER_TRIGGERED"]
    assert any(a == f"user:{victim}" and code in b for a, b in tiers), tiers

    mark = len(notes.getvalue())
    stack.at(DAY2, time(16, 30))
    report = await daily_report(trading_day=DAY2)
    assert report["users"] == 2
    # The day's bars of the scanned and held stocks, from the operator's quotes, for the monthly review.
    bars = report["daily_bars"]
    assert bars["failed"] == 0 and bars["recorded"] == bars["codes"] > 0, bars
    closes = {r.code: r.close for r in read_bars(stack.db, DAY2, DAY2)}
    assert closes[code] == stack.sim.engine.stocks[code].price and len(closes) == bars["codes"]
    ready = audiences(notes, "REPORT_READY", mark)
    # One per user and one for the operator.
    assert len(ready) == 3, ready
    assert [a for a in ready if a.startswith("user:")] == [f"user:{u}" for u in users], ready
