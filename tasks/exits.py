"""The intraday price watch: ticks go through the exit book; fired sells are sent exactly once."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from prefect import task

from autotrade.domain.calendar import hours_of
from autotrade.domain.krx import KST
from autotrade.domain.models import Tier
from autotrade.runtime import SELL, Runtime, get_runtime
from autotrade.store.models import ThreeTierStrategy
from autotrade.trading.buys import AccountRef
from autotrade.trading.exit_engine import PendingSell
from autotrade.trading.ports import NotProcessed, OutcomeUnknown
from tasks.trading import _logger, for_each_account


async def send_sell(rt: Runtime, sell: PendingSell, day: date) -> None:
    """Send one fired sell and pick up its fills at once (market orders fill immediately)."""
    ref = AccountRef(sell.user_id, sell.account_no)
    broker = await rt.brokers.for_account(ref, SELL)
    try:
        await rt.orders.execute(sell.intent_id, broker)
    except (NotProcessed, OutcomeUnknown) as exc:
        _logger().warning("sell %s not confirmed (%s); reconciliation will resolve it", sell.intent_id, exc)
        return
    result = await rt.positions.sync_account(ref, broker, day)
    notify_tier_fills(rt, sell.user_id, result.sell_fills)
    for follow in result.pending_sells:
        await send_sell(rt, follow, day)


def notify_tier_fills(rt: Runtime, user_id: str, fills: list[tuple[str, Tier, int, int, int]]) -> None:
    """TIER_TRIGGERED for each sell fill (code, tier, quantity, price, realized P&L)."""
    from autotrade.notify import TierFill, tier_triggered

    for code, tier, qty, price, pnl in fills:
        with rt.db.unit_of_work() as s:
            st = s.scalars(
                sa.select(ThreeTierStrategy)
                .where(ThreeTierStrategy.user_id == user_id, ThreeTierStrategy.code == code)
                .order_by(ThreeTierStrategy.id.desc())
            ).first()
            name, left = (st.name, st.held_quantity) if st else (code, 0)
        rt.notify(tier_triggered(user_id, TierFill(code, name, tier, qty, price, pnl, left), rt.clock()))


def _close_of(day: date) -> datetime:
    return datetime.combine(day, hours_of(day).close, tzinfo=KST)


@task(name="watch_prices", persist_result=False)
async def watch_prices(
    day: date, users: list[str] | None = None, until: datetime | None = None
) -> dict[str, Any]:
    """Watch prices from now until ``until`` (the close), firing exits and reconciling periodically."""
    rt = get_runtime()
    stop_at = until or _close_of(day)
    every = timedelta(minutes=rt.settings.reconcile_every_minutes)
    rt.engine.load(users)
    feed = await rt.brokers.price_feed()
    watched = {st.code for _, st in rt.engine.book}
    await feed.subscribe(sorted(watched))
    control = rt.time
    inflight: set[asyncio.Task[None]] = set()

    def landed(t: asyncio.Task[None]) -> None:
        inflight.discard(t)
        if not inflight:
            control.resume()

    control.watch_ready(stop_at)
    ticks = fired = reconciles = 0
    next_reconcile = rt.clock() + every
    try:
        while rt.clock() < stop_at:
            tick = await feed.next_tick(wait_seconds=0.5)
            if tick is not None:
                ticks += 1
                code, price, at = tick
                for sell in rt.engine.on_price(code, price, at):
                    fired += 1
                    if not inflight:
                        control.hold()
                    t = asyncio.create_task(send_sell(rt, sell, day))
                    inflight.add(t)
                    t.add_done_callback(landed)
            if rt.clock() >= next_reconcile:
                reconciles += 1
                next_reconcile = rt.clock() + every
                await _reconcile_watched(rt, day, users)
                new = {st.code for _, st in rt.engine.book} - watched
                if new:
                    await feed.subscribe(sorted(new))
                    watched |= new
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
        await _reconcile_watched(rt, day, users)
        rt.engine.day_end(stop_at)
    finally:
        await feed.aclose()
    return {"ticks": ticks, "sells_fired": fired, "reconciliations": reconciles + 1, "watched": len(watched)}


async def _reconcile_watched(rt: Runtime, day: date, users: list[str] | None) -> None:
    accounts = [(a.user_id, a.account_no) for a in rt.accounts(users, trading_only=False)]

    async def work(ref: AccountRef) -> object:
        broker = await rt.brokers.for_account(ref, SELL)
        report = await rt.reconciler.reconcile_account(ref, broker, day)
        if report.sync is not None:
            notify_tier_fills(rt, ref.user_id, report.sync.sell_fills)
        for sell in report.pending_sells:
            await send_sell(rt, sell, day)
        return report

    await for_each_account(accounts, work)
