"""User and operator notifications built from the database, so a re-run tells the same story.

Plain functions rather than tasks: the dispatcher never raises, and a notice must not fail the trade.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa

from autotrade.domain.exits import WATCHED_STATUSES, TierStatus
from autotrade.domain.models import Side, Tier
from autotrade.domain.orders import IntentStatus
from autotrade.runtime import get_runtime
from autotrade.store.models import OrderIntentRow, ThreeTierStrategy, TradingSignal


def _buy_rows(day: date, users: set[str]) -> list[tuple[str, str, str, int, int, int, int]]:
    rt = get_runtime()
    with rt.db.unit_of_work() as s:
        rows = s.execute(
            sa.select(
                OrderIntentRow.user_id, OrderIntentRow.code, TradingSignal.name, OrderIntentRow.quantity,
                OrderIntentRow.price, OrderIntentRow.filled_quantity, OrderIntentRow.filled_amount,
            )
            .join(TradingSignal, TradingSignal.id == OrderIntentRow.signal_id, isouter=True)
            .where(
                OrderIntentRow.trading_day == day,
                OrderIntentRow.side == Side.BUY,
                OrderIntentRow.status != IntentStatus.REJECTED,
                OrderIntentRow.order_no.is_not(None),
                OrderIntentRow.user_id.in_(sorted(users)),
            )
            .order_by(OrderIntentRow.id)
        ).all()  # fmt: skip
    return [(r[0], r[1], r[2] or r[1], r[3], r[4] or 0, r[5], r[6]) for r in rows]


def _users(outcomes: Sequence[dict[str, Any]]) -> set[str]:
    return {o["user_id"] for o in outcomes if "user_id" in o}


def notify_buys(outcomes: Sequence[dict[str, Any]], day: date) -> int:
    """BUY_ORDERS_PLACED to every user with orders today; returns how many users were told."""
    from autotrade.notify import OrderLine, buy_orders_placed

    rt = get_runtime()
    lines: dict[str, list[OrderLine]] = defaultdict(list)
    for user, code, name, qty, price, _, _ in _buy_rows(day, _users(outcomes)):
        lines[user].append(OrderLine(code, name, qty, price))
    for user, orders in lines.items():
        rt.notify(buy_orders_placed(user, orders, rt.clock()))
    return len(lines)


def notify_fills(outcomes: Sequence[dict[str, Any]], day: date) -> int:
    """FILLS_CONFIRMED per user for the day's buys, then EXITS_ARMED for their watched positions."""
    from autotrade.notify import FillLine, fills_confirmed

    rt = get_runtime()
    lines: dict[str, list[FillLine]] = defaultdict(list)
    for user, code, name, qty, _, filled, amount in _buy_rows(day, _users(outcomes)):
        avg = (2 * amount + filled) // (2 * filled) if filled else 0
        lines[user].append(FillLine(code, name, qty, filled, avg))
    for user, fills in lines.items():
        rt.notify(fills_confirmed(user, fills, rt.clock()))
    notify_exits_armed(sorted(lines))
    return len(lines)


def notify_exits_armed(users: Sequence[str] | None = None) -> int:
    """EXITS_ARMED (the 09:15 message): every watched position with its three levels."""
    from autotrade.notify import ArmedExit, exits_armed

    rt = get_runtime()
    per_user: dict[str, list[ArmedExit]] = defaultdict(list)
    with rt.db.unit_of_work() as s:
        q = sa.select(ThreeTierStrategy).where(ThreeTierStrategy.status.in_(list(WATCHED_STATUSES)))
        if users is not None:
            q = q.where(ThreeTierStrategy.user_id.in_(list(users)))
        for st in s.scalars(q.order_by(ThreeTierStrategy.id)).all():
            preserve = next((o for o in st.orders if o.order_type is Tier.PRESERVE), None)
            skipped = preserve is None or preserve.status is TierStatus.SKIPPED
            per_user[st.user_id].append(
                ArmedExit(
                    st.code, st.name, st.held_quantity, st.entry_price, st.stop_loss_price,
                    None if skipped else st.preserve_price, st.take_profit_price,
                )
            )  # fmt: skip
    for user, exits in per_user.items():
        rt.notify(exits_armed(user, exits, rt.clock()))
    return len(per_user)
