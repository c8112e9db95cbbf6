"""User and operator notifications built from the database, so a re-run tells the same story, and told
once: every item a user was told (an order placed, a fill, an armed exit) is recorded in ``user_notices``
for the day, and a re-run or a Prefect retry sends a user only the items not told yet.

Plain functions rather than tasks: the dispatcher never raises, and a notice must not fail the trade.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from autotrade.domain.exits import WATCHED_STATUSES, TierStatus
from autotrade.domain.krx import KST
from autotrade.domain.models import Side, Tier
from autotrade.domain.orders import IntentStatus
from autotrade.runtime import get_runtime
from autotrade.store.models import OrderIntentRow, ThreeTierStrategy, TradingSignal, UserNotice

L = TypeVar("L")


def only_new(kind: str, day: date, items: dict[str, list[tuple[str, L]]]) -> dict[str, list[L]]:
    """Of each user's ``(item key, line)`` pairs, the lines whose key was not yet told on ``day``; records
    them as told. Two runs racing on the same items: the second one's insert fails, and it tells nothing."""
    rt = get_runtime()
    users = sorted(u for u, lines in items.items() if lines)
    if not users:
        return {}
    try:
        with rt.db.unit_of_work() as s:
            told = set(
                s.execute(
                    sa.select(UserNotice.user_id, UserNotice.item).where(
                        UserNotice.trading_day == day, UserNotice.kind == kind, UserNotice.user_id.in_(users)
                    )
                ).tuples()
            )
            new: dict[str, list[L]] = {}
            rows: list[dict[str, Any]] = []
            now = rt.clock()
            for user in users:
                fresh = [(key, line) for key, line in items[user] if (user, key) not in told]
                if fresh:
                    new[user] = [line for _, line in fresh]
                    rows += (
                        {"user_id": user, "trading_day": day, "kind": kind, "item": key[:255], "told_at": now}
                        for key, _ in fresh
                    )
            # in bulk: an evening tells 100,000 items (as ORM objects: 3-6x the CPU of a bulk INSERT)
            rt.db.insert_many(s, UserNotice.__table__, rows)  # type: ignore[arg-type]
    except IntegrityError:
        return {}
    return new


def _send_new(
    kind: str, day: date, items: dict[str, list[tuple[str, L]]], build: Callable[[str, list[L]], object]
) -> int:
    """Each user's new items as one notice. Recorded as told before they go: waited into the dispatcher's
    queue, never dropped for want of room (an evening tells more users than the queue holds). Call it from
    a thread that may wait (``asyncio.to_thread``); on an event loop's thread a full queue drops."""
    rt = get_runtime()
    new = only_new(kind, day, items)
    if len(new) > 1:
        rt.preload_routes(new)
    for user, lines in new.items():
        rt.notify(build(user, lines), wait=True)
    return len(new)


def _buy_rows(day: date, users: set[str]) -> list[tuple[int, str, str, str, int, int, int, int]]:
    rt = get_runtime()
    with rt.db.unit_of_work() as s:
        rows = s.execute(
            sa.select(
                OrderIntentRow.id, OrderIntentRow.user_id, OrderIntentRow.code, TradingSignal.name,
                OrderIntentRow.quantity,
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
    return [(r[0], r[1], r[2], r[3] or r[2], r[4], r[5] or 0, r[6], r[7]) for r in rows]


def _users(outcomes: Sequence[dict[str, Any]]) -> set[str]:
    return {o["user_id"] for o in outcomes if "user_id" in o}


def notify_buys(outcomes: Sequence[dict[str, Any]], day: date) -> int:
    """BUY_ORDERS_PLACED to every user with orders today not told yet; returns how many users were told."""
    from autotrade.notify import OrderLine, buy_orders_placed

    rt = get_runtime()
    lines: dict[str, list[tuple[str, OrderLine]]] = defaultdict(list)
    for intent, user, code, name, qty, price, _, _ in _buy_rows(day, _users(outcomes)):
        lines[user].append((f"order:{intent}", OrderLine(code, name, qty, price)))
    return _send_new("BUY_ORDERS_PLACED", day, lines, lambda u, ls: buy_orders_placed(u, ls, rt.clock()))


def flush_notices(notifier: object) -> bool:
    """Wait until ``notifier``'s queued notices are delivered (or recorded as failed), at most its flush
    timeout; False when time ran out."""
    flush = getattr(notifier, "flush", None)
    return True if flush is None else bool(flush())


async def deliver_notices() -> bool:
    """At the end of a flow: wait until the notices it queued are delivered (or recorded as failed), at most
    ``notify_flush_timeout_seconds``, in a thread so the event loop stays free. False when time ran out (the
    worker goes on delivering while the process lives; at exit what is left is recorded as undelivered)."""
    return await asyncio.to_thread(flush_notices, get_runtime().notifier)


async def tell_buys(outcomes: Sequence[dict[str, Any]], day: date) -> int:
    """:func:`notify_buys` from the event loop (in a worker thread: it reads and writes the database), its
    notices then delivered, so that a process ending with its share has told its users."""
    told = await asyncio.to_thread(notify_buys, outcomes, day)
    await deliver_notices()
    return told


def notify_fills(outcomes: Sequence[dict[str, Any]], day: date) -> int:
    """FILLS_CONFIRMED per user for the day's buys whose filled quantity (none included) was not told yet,
    then EXITS_ARMED for their watched positions."""
    from autotrade.notify import FillLine, fills_confirmed

    rt = get_runtime()
    lines: dict[str, list[tuple[str, FillLine]]] = defaultdict(list)
    for intent, user, code, name, qty, _, filled, amount in _buy_rows(day, _users(outcomes)):
        avg = (2 * amount + filled) // (2 * filled) if filled else 0
        lines[user].append((f"fill:{intent}:{filled}", FillLine(code, name, qty, filled, avg)))
    told = _send_new("FILLS_CONFIRMED", day, lines, lambda u, ls: fills_confirmed(u, ls, rt.clock()))
    notify_exits_armed(sorted(lines), day)
    return told


def notify_exits_armed(users: Sequence[str] | None = None, day: date | None = None) -> int:
    """EXITS_ARMED (the 09:15 message): every watched position with its three levels, once a day per
    position and levels (a re-run the same day tells only positions armed or moved since)."""
    from autotrade.notify import ArmedExit, exits_armed

    rt = get_runtime()
    day = day or rt.clock().astimezone(KST).date()
    per_user: dict[str, list[tuple[str, ArmedExit]]] = defaultdict(list)
    with rt.db.unit_of_work() as s:
        q = sa.select(ThreeTierStrategy).where(ThreeTierStrategy.status.in_(list(WATCHED_STATUSES)))
        if users is not None:
            q = q.where(ThreeTierStrategy.user_id.in_(list(users)))
        for st in s.scalars(q.order_by(ThreeTierStrategy.id)).all():
            preserve = next((o for o in st.orders if o.order_type is Tier.PRESERVE), None)
            skipped = preserve is None or preserve.status is TierStatus.SKIPPED
            line = ArmedExit(
                st.code, st.name, st.held_quantity, st.entry_price, st.stop_loss_price,
                None if skipped else st.preserve_price, st.take_profit_price,
            )  # fmt: skip
            levels = (st.held_quantity, st.stop_loss_price, line.preserve_price, st.take_profit_price)
            key = f"armed:{st.id}:" + ":".join(map(str, levels))
            per_user[st.user_id].append((key, line))
    return _send_new("EXITS_ARMED", day, per_user, lambda u, ls: exits_armed(u, ls, rt.clock()))
