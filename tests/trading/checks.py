"""Invariants checked after a simulated run: limits, traceability, tiers against the price path, agreement
with the broker. Each returns a list of violations (empty when all is well) so a test can show them all."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime

import sqlalchemy as sa

from autotrade.domain.models import Side, Tier
from autotrade.domain.orders import FINAL_STATUSES, IntentStatus
from autotrade.store.models import FillRow, OrderIntentRow, ThreeTierStrategy, TradingSignal
from tests.trading.harness import World


def broker_orders(w: World) -> dict[str, list[dict[str, object]]]:
    return {t.account_no: w.sim.admin.account(t.account_no)["orders"] for t in w.traders}


def traceability(w: World) -> list[str]:
    """Every broker order is one intent's; every buy comes from a signal, every sell from a tier."""
    bad: list[str] = []
    with w.db.unit_of_work() as s:
        intents = s.scalars(sa.select(OrderIntentRow)).all()
        by_order = Counter((i.account_no, i.order_no) for i in intents if i.order_no)
        for key, n in by_order.items():
            if n > 1:
                bad.append(f"order {key} claimed by {n} intents")
        for i in intents:
            if i.side is Side.BUY and (i.signal_id is None or s.get(TradingSignal, i.signal_id) is None):
                bad.append(f"buy intent {i.key} has no signal")
            if i.side is Side.SELL and (i.strategy_id is None or i.tier is None):
                bad.append(f"sell intent {i.key} has no strategy tier")
            if i.status in (IntentStatus.SUBMITTING, IntentStatus.UNKNOWN):
                bad.append(f"intent {i.key} left {i.status}")
            reason = i.last_error or ""
            unsent = i.status is IntentStatus.EXPIRED and reason.startswith(
                ("not sent:", "outcome unknown when", "withdrawn:")
            )
            # An unsent buy whose session ended is recorded as such (EXPIRED, "not sent: ..."), and so is a
            # resting stop withdrawn unsent because a market sell of its shares went first: neither is lost.
            final = i.status in FINAL_STATUSES and i.status is not IntentStatus.REJECTED
            if final and not i.order_no and not unsent:
                bad.append(f"intent {i.key} {i.status} without a broker order")
    for account_no, orders in broker_orders(w).items():
        for o in orders:
            if o["orig_order_no"]:
                continue  # a cancel or modify refers to its original
            if (account_no, o["order_no"]) not in by_order:
                bad.append(f"broker order {account_no}/{o['order_no']} has no intent (duplicate or stray)")
    return bad


def limits(w: World) -> list[str]:
    """Per account and day: spend within the daily limits, per-stock cap, holdings count."""
    cfg = w.settings
    bad: list[str] = []
    with w.db.unit_of_work() as s:
        buys = s.scalars(sa.select(OrderIntentRow).where(OrderIntentRow.side == Side.BUY)).all()
        spent: dict[tuple[str, date], int] = defaultdict(int)
        for b in buys:
            amount = (b.price or 0) * b.quantity
            if amount > cfg.max_per_stock:
                bad.append(f"{b.key}: {amount} over the per-stock cap {cfg.max_per_stock}")
            spent[(b.account_no, b.trading_day)] += amount
            if b.filled_amount > amount:
                bad.append(f"{b.key}: filled {b.filled_amount} more than planned {amount}")
    for t in w.traders:
        cap = min(cfg.max_daily_investment, t.daily_limit)
        for (acct, day), total in spent.items():
            if acct == t.account_no and total > cap:
                bad.append(f"{acct} {day}: spent {total} over {cap}")
        state = w.sim.admin.account(t.account_no)
        held = [c for c, h in state["holdings"].items() if h["quantity"] > 0]
        if len(held) > cfg.max_stock_count:
            bad.append(f"{t.account_no}: {len(held)} stocks held, limit {cfg.max_stock_count}")
        if state["cash"] < 0:
            bad.append(f"{t.account_no}: negative cash {state['cash']}")
    return bad


def agreement(w: World) -> list[str]:
    """The broker's holdings equal what open strategies hold; cash follows the recorded fills to the won."""
    bad: list[str] = []
    with w.db.unit_of_work() as s:
        for t in w.traders:
            state = w.sim.admin.account(t.account_no)
            broker = {c: h["quantity"] for c, h in state["holdings"].items() if h["quantity"] > 0}
            ours: dict[str, int] = defaultdict(int)
            for st in s.scalars(
                sa.select(ThreeTierStrategy).where(ThreeTierStrategy.account_no == t.account_no)
            ):
                if st.held_quantity:
                    ours[st.code] += st.held_quantity
            if broker != dict(ours):
                bad.append(f"{t.account_no}: broker holds {broker}, strategies {dict(ours)}")
            cash = t.cash
            for f in s.scalars(sa.select(FillRow).where(FillRow.account_no == t.account_no)):
                gross = f.price * f.quantity
                cash += (-gross if f.side is Side.BUY else gross) - f.fee - f.tax
            if state["cash"] != cash:
                bad.append(f"{t.account_no}: broker cash {state['cash']}, recorded fills give {cash}")
    return bad


def tiers_follow_prices(w: World) -> list[str]:
    """Every tier sell was triggered by a price the watch had read, at or through its trigger, after arming;
    and a price through the stop always produced a stop sell unless the position was closed by then. Both
    are judged by when the watch read each tick (:class:`~tests.trading.harness.Seen`), on the clock that
    stamps the sells and the close: a watch reading behind the feed reads a tick after it traded."""
    bad: list[str] = []
    with w.db.unit_of_work() as s:
        for st in s.scalars(sa.select(ThreeTierStrategy)):
            sells = s.scalars(
                sa.select(OrderIntentRow)
                .where(OrderIntentRow.strategy_id == st.id)
                .order_by(OrderIntentRow.id)
            ).all()
            path = [t for t in w.ticks.get(st.code, []) if t.at >= _aware(st.armed_at)]
            for sell in sells:
                if sell.trade_type == "STOP_LIMIT" or sell.submitted_at is None:
                    continue  # a resting stop is placed before any crossing, by design; never sent: nothing
                if sell.tier is Tier.STOP_LOSS and any(
                    x.trade_type == "STOP_LIMIT" and x.filled_quantity and x.id < sell.id for x in sells
                ):
                    continue  # the broker's stop sold part (its trigger traded): the rest goes at market
                sent = _aware(sell.submitted_at)
                read = [t.price for t in path if t.seen <= sent]
                trigger = {
                    Tier.STOP_LOSS: lambda p, st=st: p <= st.stop_loss_price,
                    Tier.PRESERVE: lambda p, st=st: p >= st.preserve_price,
                    Tier.TAKE_PROFIT: lambda p, st=st: p >= st.take_profit_price,
                }[sell.tier or Tier.STOP_LOSS]
                if not any(trigger(p) for p in read):
                    bad.append(f"{st.code}#{st.id}: {sell.tier} sell without a price through its trigger")
            # A resting stop counts once it sold: resting alone, it may have gapped below its limit.
            fired_stop = any(
                x.tier is Tier.STOP_LOSS and (x.trade_type != "STOP_LIMIT" or x.filled_quantity)
                for x in sells
            )
            for t in path:
                open_then = st.closed_at is None or t.seen < st.closed_at
                if t.price <= st.stop_loss_price and open_then and not fired_stop:
                    bad.append(
                        f"{st.code}#{st.id}: price {t.price} at {t.at:%m-%d %H:%M} (read {t.seen:%H:%M:%S}) "
                        "through the stop, no sell"
                    )
                    break
    return bad


def _aware(value: datetime | None) -> datetime:
    assert value is not None
    return value
