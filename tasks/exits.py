"""The intraday price watch: ticks go through the exit book; fired sells are sent exactly once."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Any

from prefect import task

from autotrade.domain.calendar import hours_of
from autotrade.domain.krx import KST
from autotrade.runtime import SELL, Runtime, get_runtime
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
    for follow in result.pending_sells:
        await send_sell(rt, follow, day)


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
    inflight: set[asyncio.Task[None]] = set()
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
                    t = asyncio.create_task(send_sell(rt, sell, day))
                    inflight.add(t)
                    t.add_done_callback(inflight.discard)
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
        for sell in report.pending_sells:
            await send_sell(rt, sell, day)
        return report

    await for_each_account(accounts, work)
