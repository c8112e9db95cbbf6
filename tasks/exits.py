"""The intraday price watch: ticks go through the exit book; fired sells are sent exactly once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from prefect import task

from autotrade.access import MarketDataKeyMissing
from autotrade.broker.fallback import FeedMode, FeedSwitch
from autotrade.domain.calendar import hours_of, is_trading_day
from autotrade.domain.krx import KST, Session, session_at
from autotrade.domain.models import Tier
from autotrade.notify import OPERATOR, Notification, NotificationKind, Severity, error_occurred
from autotrade.ops.worker_metrics import observe_tick, tier_fired
from autotrade.runtime import SELL, PriceSource, Runtime, get_runtime
from autotrade.store.leases import Lease, process_holder
from autotrade.store.models import ThreeTierStrategy
from autotrade.trading.buys import AccountRef
from autotrade.trading.exit_engine import ExitEngine, PendingSell
from autotrade.trading.ports import NotProcessed, OutcomeUnknown
from tasks.trading import _logger, in_run, reconcile_positions


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


def _lease_name(users: list[str] | None) -> str:
    """One watch for everyone; a watch run by hand for some users is a watch of its own."""
    return "intraday" if not users else "intraday:" + ",".join(sorted(users))[:110]


@task(name="watch_prices", persist_result=False)
async def watch_prices(
    day: date, users: list[str] | None = None, until: datetime | None = None
) -> dict[str, Any]:
    """Watch prices from now until ``until`` (the close), firing exits and reconciling periodically.

    One process watches at a time: it holds the watch's lease (``autotrade.store.leases``) and renews it
    every ``watcher_renew_seconds``. A run that finds the lease live elsewhere leaves at once (the schedule
    starts one every few minutes in the session); one that finds it expired (its holder died) takes over."""
    rt = get_runtime()
    stop_at = until or _close_of(day)
    lease = Lease(rt.db, _lease_name(users), timedelta(seconds=rt.settings.watcher_lease_seconds))
    holder = process_holder()
    state = await rt.db.run(lease.acquire, holder)
    if not state.acquired:
        _logger().info("price watch held by %s (until %s): nothing to do", state.holder, state.expires_at)
        return {"skipped": "watched by another process", "holder": state.holder}
    if rt.clock() >= stop_at and state.watched_until is not None and state.watched_until >= stop_at:
        await rt.db.run(lease.release, holder)
        return {"skipped": "the day's watch is over"}
    _logger().info("price watch lease taken by %s", holder)
    lost = asyncio.Event()
    keeper = asyncio.create_task(_keep_lease(rt, lease, holder, lost), name="watcher-lease")
    finished = False
    try:
        result = await _watch(rt, day, users, stop_at, lost)
        finished = not lost.is_set()
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        if not lost.is_set():
            await rt.db.run(lease.release, holder, stop_at if finished else None)
    return result


async def _keep_lease(rt: Runtime, lease: Lease, holder: str, lost: asyncio.Event) -> None:
    every = rt.settings.watcher_renew_seconds
    while True:
        await asyncio.sleep(every)
        try:
            ours = await rt.db.run(lease.renew, holder)
        except Exception as exc:  # the database away for a moment: try again; the lease has some time
            _logger().warning("price watch lease not renewed (%s); retrying", type(exc).__name__)
            continue
        if not ours:
            _logger().error("price watch lease taken over by another process: this watcher stops")
            lost.set()
            return


def _feed_switched(rt: Runtime, switch: FeedSwitch) -> None:
    """Tell the operator when the watch polls quotes because the feed went silent, and when it is back."""
    at = rt.clock()
    if switch.mode is FeedMode.POLLING:
        text = (
            f"실시간 시세가 {switch.seconds:.0f}초 동안 끊겨 {switch.codes}종목 시세를 조회 방식으로 "
            f"감시합니다 (price feed silent {switch.seconds:.0f} s: polling quotes)"
        )
        rt.notify(error_occurred("intraday_reconcile", "price feed", text, at))
        return
    text = (
        f"실시간 시세 수신이 복구되어 조회 감시를 멈췄습니다 ({switch.seconds:.0f}초 동안 조회) "
        f"(price feed ticking again after {switch.seconds:.0f} s of polling)"
    )
    rt.notify(
        Notification(
            kind=NotificationKind.ERROR, audience=OPERATOR, title="복구: intraday_reconcile / price feed",
            lines=(text,), severity=Severity.INFO, occurred_at=at,
            template_params={"flow": "intraday_reconcile", "step": "price feed", "error": text},
        )
    )  # fmt: skip


async def _open_prices(rt: Runtime) -> PriceSource:
    try:
        return await rt.brokers.price_feed(on_switch=lambda switch: _feed_switched(rt, switch))
    except MarketDataKeyMissing as exc:
        _logger().error("price watch cannot start: %s", exc)
        rt.notify(error_occurred("intraday_reconcile", "price feed", str(exc), rt.clock()))
        raise


async def catch_up(
    engine: ExitEngine, prices: PriceSource, codes: Sequence[str], now: datetime, *, after_gap: bool = False
) -> list[PendingSell]:
    """When a watch (re)starts during the continuous session, and after every gap in its price source
    (``after_gap``: a reconnect, ticks dropped, a switch to or from polling): each watched stock's day range
    from the broker's quote, through :meth:`ExitEngine.catch_up`, so a stop or take-profit crossed while
    no watcher ran, or while its feed was down, still sells. Outside the session (nothing to sell into) it
    does nothing."""
    local = now.astimezone(KST)
    if not is_trading_day(local.date()):
        return []
    hours = hours_of(local.date())
    if session_at(local, hours) is not Session.CONTINUOUS:
        return []
    sells: list[PendingSell] = []
    for code in codes:
        extremes = await prices.day_range(code)
        if extremes is not None:
            sells += engine.catch_up(code, *extremes, now)
    if sells and after_gap:
        _logger().warning(
            "the price feed had a gap (a reconnect, dropped ticks or polling): %d sells for levels the day's "
            "range crossed while its ticks were missed", len(sells),
        )  # fmt: skip
    elif sells:
        late = local - datetime.combine(local.date(), hours.open, tzinfo=KST)
        _logger().warning(
            "the price watch started %d min into the session: %d sells for levels the day's range crossed "
            "before it (a watcher that died, or a late start)", late.total_seconds() // 60, len(sells),
        )  # fmt: skip
    return sells


async def _watch(
    rt: Runtime, day: date, users: list[str] | None, stop_at: datetime, lost: asyncio.Event
) -> dict[str, Any]:
    every = timedelta(minutes=rt.settings.reconcile_every_minutes)
    rt.engine.load(users)
    feed = await _open_prices(rt)
    watched = {st.code for _, st in rt.engine.book}
    await feed.subscribe(sorted(watched))
    control = rt.time
    inflight: set[asyncio.Task[None]] = set()

    def landed(t: asyncio.Task[None]) -> None:
        inflight.discard(t)
        if not inflight:
            control.resume()

    def send(sell: PendingSell) -> None:
        tier_fired(sell.tier)
        if not inflight:
            control.hold()
        t = asyncio.create_task(send_sell(rt, sell, day))
        inflight.add(t)
        t.add_done_callback(landed)

    # Levels crossed while no watcher ran (this is a restart, or the feed was down) are caught up first.
    gaps = feed.gaps
    caught_up = await catch_up(rt.engine, feed, sorted(watched), rt.clock())
    for sell in caught_up:
        send(sell)
    control.watch_ready(stop_at)
    ticks, fired, reconciles, gap_catch_ups = 0, len(caught_up), 0, 0
    catching: asyncio.Task[None] | None = None

    async def catch_up_after_gap() -> None:
        # Beside the loop, not in it: the quotes take a while at the key's rate, and ticks keep coming.
        nonlocal fired
        for sell in await catch_up(rt.engine, feed, sorted(watched), rt.clock(), after_gap=True):
            fired += 1
            send(sell)

    next_reconcile = rt.clock() + every
    try:
        while rt.clock() < stop_at and not lost.is_set():
            if catching is not None and catching.done():
                catching.result()  # a catch-up that failed fails the watch, as a tick's failure does
            if feed.gaps != gaps and (catching is None or catching.done()):
                # Trades may have gone by unseen (a reconnect, dropped ticks, polling): a level crossed and
                # crossed back in the gap left no tick, so the day's range is read again.
                gaps, gap_catch_ups = feed.gaps, gap_catch_ups + 1
                catching = asyncio.create_task(catch_up_after_gap())
            tick = await feed.next_tick(wait_seconds=0.5)
            if tick is not None:
                ticks += 1
                code, price, at = tick
                observe_tick(at, rt.clock())  # the tick's lag: its trade time to this decision
                for sell in rt.engine.on_price(code, price, at):
                    fired += 1
                    send(sell)
            if rt.clock() >= next_reconcile:
                reconciles += 1
                next_reconcile = rt.clock() + every
                await in_run(reconcile_positions)(day, users)  # a task run on every pass
                new = {st.code for _, st in rt.engine.book} - watched
                if new:
                    await feed.subscribe(sorted(new))
                    watched |= new
        if catching is not None:
            await catching
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
        if lost.is_set():  # the watcher that took over closes the day
            return {"ticks": ticks, "sells_fired": fired, "reconciliations": reconciles,
                    "watched": len(watched), "gap_catch_ups": gap_catch_ups, "lease_lost": True}  # fmt: skip
        await in_run(reconcile_positions)(day, users)
        rt.engine.day_end(stop_at)
    finally:
        if catching is not None and not catching.done():
            catching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await catching
        await feed.aclose()
    return {"ticks": ticks, "sells_fired": fired, "reconciliations": reconciles + 1, "watched": len(watched),
            "gap_catch_ups": gap_catch_ups}  # fmt: skip
