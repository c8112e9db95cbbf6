"""A seeded run of many trading days for several users against the simulator with broker faults drawn at
a set rate and process crashes injected at every step of the order protocol; each failed step is re-run
as Prefect would (a fresh process: the services rebuilt over the same database). Accounts are reached
through the vault's gateway by default (keys registered through the vault, temporary tokens, the access
log, the sealed broker-token cache); ``access="direct"`` uses a token manager per account instead. Each
session step also reads the WebSocket price feed, which the simulator drops at the same rate.

Afterwards: every intended order placed exactly once, exits against the price path, broker and database
agreeing to the won, limits, the feed reconnected and kept delivering, and no app key, secret or broker
token in the database (the access log and security events included) or in any log record of the run.
Exits are also checked against the simulator's whole price path (every step, not only what the watch saw):
a stop or take-profit level crossed while a position was open must be followed by a sell of it that day.
With ``resting_stops`` a stop-limit order rests at the broker for every position (the ``resting_stop``
setting). ``run`` returns the figures ``bench/faults.py`` prints."""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
import time as walltime
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from autotrade.domain.calendar import hours_of, is_trading_day, next_trading_day
from autotrade.domain.krx import KST
from autotrade.domain.models import ApiStatus, Side, Tier
from autotrade.runtime import PriceSource
from autotrade.sim.server import running_simulator
from autotrade.store.models import (
    AccessLog,
    FillRow,
    OrderIntentRow,
    SecurityEvent,
    ThreeTierStrategy,
    TradingSignal,
    UserApiKey,
)
from autotrade.trading.resting_stops import SOLD_BY_RESTING_STOP
from tasks import exits as exit_tasks
from tests.trading import checks
from tests.trading.harness import AccessKind, RecordingPrices, Seen, Trader, World, make_world

REST_FAULTS = ("http_500", "http_429", "latency", "drop_after_accept", "token_expiry")
FAULT_KINDS = (*REST_FAULTS, "ws_disconnect")
# A rule on "*" also rolls (and counts) on WebSocket messages, where a REST fault does nothing: REST faults
# get the REST paths, the disconnect gets the socket's, so every count is of faults that took effect.
REST_PATHS = ("/oauth2/token", "/api/dostk/ordr", "/api/dostk/acnt", "/api/dostk/stkinfo")
WS_PATH = "/api/dostk/websocket"
FEED_LOGGER = "autotrade.broker.feed"
RERUNS = 60  # of one step before the run gives up
PricePath = dict[str, list[tuple[datetime, int]]]  # code -> (time, price) of every step


class Crash(BaseException):
    """The worker died at this point of the order protocol. A BaseException, as a process's death is: no
    ``except Exception`` in the product (an account's failure kept apart from the others) can swallow it and
    carry on as if only that account had failed; the whole step dies (:func:`_die`) and is run again."""


class RunLog(logging.Handler):
    """Every log record of the run, formatted (scanned for secrets afterwards), and the price feed's logins
    counted from its log (the first login of a feed, then one per reconnect)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []
        self.feed_logins = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
            if record.name == FEED_LOGGER and record.getMessage().startswith("price feed connected"):
                self.feed_logins += 1
        except Exception:
            self.handleError(record)


class FeedStats:
    """What the session steps read from the price feed."""

    def __init__(self, log: RunLog) -> None:
        self.log = log
        self.opened = 0
        self.ticks = 0
        self.ticks_after_reconnect = 0
        self.reconnects = 0
        self._logins_at_open = 0

    def open(self) -> None:
        self.opened += 1
        self._logins_at_open = self.log.feed_logins

    def close(self) -> None:
        self.reconnects += max(0, self.log.feed_logins - self._logins_at_open - 1)

    async def drain(
        self,
        prices: PriceSource,
        wait_seconds: float = 0.03,
        on_tick: Callable[[str, int, datetime], Awaitable[None]] | None = None,
    ) -> None:
        """Hand each tick pushed so far to ``on_tick``, until none comes for ``wait_seconds``."""
        while (tick := await prices.next_tick(wait_seconds)) is not None:
            self.ticks += 1
            if self.log.feed_logins - self._logins_at_open > 1:
                self.ticks_after_reconnect += 1
            if on_tick is not None:
                await on_tick(*tick)


async def _die(before: set[asyncio.Task[Any]]) -> None:
    """The process that ran the step is gone, and everything it was doing with it: the tasks it started
    (other accounts' work still under way, a price feed's pump) stop here, as they would with the process.
    Left running, they would go on sending beside the process that runs the step again, which no real
    crash allows. (Cancelled, they run their ``except BaseException`` clauses, which a killed process would
    not: the gateway's in-flight mark covers both.)"""
    me = asyncio.current_task()
    orphans = [t for t in asyncio.all_tasks() - before if t is not me and not t.done()]
    for t in orphans:
        t.cancel()
    if orphans:
        await asyncio.wait(orphans, timeout=5)


def _codes(n: int) -> list[str]:
    return [f"{200_000 + i * 10:06d}" for i in range(n)]


async def run(
    *,
    users: int = 4,
    days: int = 5,
    fault_rate: float = 0.05,
    crash_rate: float = 0.03,
    seed: int = 1,
    db_url: str | None = None,
    first_day: date = date(2026, 10, 5),
    work: Path | None = None,
    access: AccessKind = "gateway",
    ws_ping_seconds: float = 0.02,
    resting_stops: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """``ws_ping_seconds``: the simulator pings an idle socket this often (wall time) and the feed echoes
    each ping; every message the feed sends rolls the disconnect fault."""
    log = RunLog()
    root = logging.getLogger()
    level = root.level
    root.addHandler(log)
    root.setLevel(logging.DEBUG)
    try:
        return await _run(users, days, fault_rate, crash_rate, seed, db_url, first_day, work, access,
                          ws_ping_seconds, resting_stops, progress, log)  # fmt: skip
    finally:
        root.removeHandler(log)
        root.setLevel(level)


async def _run(
    users: int,
    days: int,
    fault_rate: float,
    crash_rate: float,
    seed: int,
    db_url: str | None,
    first_day: date,
    work: Path | None,
    access: AccessKind,
    ws_ping_seconds: float,
    resting_stops: bool,
    progress: Callable[[str], None],
    log: RunLog,
) -> dict[str, Any]:
    work = work or Path(tempfile.mkdtemp(prefix="autotrade-faults-"))
    rng = random.Random(seed)
    codes = _codes(12)
    crashes: Counter[str] = Counter()
    reruns = 0
    started = walltime.monotonic()
    if not is_trading_day(first_day):  # the evening flow runs on trading days only
        first_day = next_trading_day(first_day)
    start = datetime.combine(first_day, time(15, 0), tzinfo=KST)
    feed = FeedStats(log)
    tokens: set[str] = set()
    with running_simulator(seed=seed, start=start, volatility=0.006, after_hours_fill_rate=0.85,
                           ping_seconds=ws_ping_seconds) as sim:  # fmt: skip
        sim.admin.add_stocks([
            {"code": c, "name": f"종목{i}", "prev_close": p}
            for i, (c, p) in enumerate(zip(codes, [4_150, 8_900, 12_350, 23_400, 48_750, 61_200, 98_500,
                                                    15_200, 7_770, 33_050, 55_000, 1_980], strict=True))
        ])  # fmt: skip
        traders = [
            Trader(f"u{i:03d}", f"{5_300_000_000 + i:010d}", 30_000_000, 4_000_000) for i in range(users)
        ]
        w = make_world(sim, db_url or f"sqlite:///{work / 'faults.db'}", work, traders, access=access,
                       max_stock_count=5, max_per_stock=1_000_000, order_settle_seconds=1,
                       resting_stop=resting_stops)  # fmt: skip
        steps: PricePath = {}  # every price step of the simulator

        def record(stock: Any, price: int, at: datetime) -> None:
            steps.setdefault(stock.code, []).append((at, price))

        sim.engine.price_listeners.append(record)

        def crash_hook(point: str) -> None:
            if rng.random() < crash_rate:
                crashes[point] += 1
                raise Crash(point)

        w.crash_hook = crash_hook
        w.restart()
        sim.admin.add_fault("ws_disconnect", path=WS_PATH, probability=fault_rate, seed=seed * 100)
        for kind in REST_FAULTS:
            extra = {"latency_ms": 30} if kind == "latency" else {}
            for path in REST_PATHS:
                sim.admin.add_fault(kind, path=path, probability=fault_rate, **extra)

        async def step(name: str, work_fn: Callable[[], Awaitable[object]]) -> None:
            nonlocal reruns
            # Each crash point draws on every order, so a session of many sells is re-run several times;
            # each re-run carries on from where the last one died.
            for attempt in range(RERUNS):
                before = asyncio.all_tasks()
                try:
                    await work_fn()
                    return
                except (Exception, Crash) as exc:  # a crash or a broker failure: a new process runs it again
                    progress(f"  {name}: {type(exc).__name__} ({exc}); re-run {attempt + 1}")
                    reruns += 1
                    await _die(before)
                    # ... after Prefect's retry delay (exponential, 2 s doubling; capped here at 30 s): the
                    # virtual clock does not pass by itself, and re-runs at one frozen instant would count
                    # as one account's burst of requests at the gateway.
                    w.sim.admin.set_clock(w.now() + timedelta(seconds=min(2 * 2**attempt, 30)))
                    w.restart()
                finally:
                    tokens.update(sim.engine.tokens.copy())  # revoked tokens leave the broker's table
            raise RuntimeError(f"{name} did not complete in {RERUNS} attempts")

        try:
            day = first_day
            for n in range(days):
                w.at(day, time(15, 36))  # the scan is published after the close, at the closing prices
                scan = w.scan_for(rng.sample(codes, 6), [round(rng.uniform(7.2, 9.8), 2) for _ in range(6)])
                await step(f"{day} evening", lambda day=day, scan=scan: w.evening(day, scan))
                day = next_trading_day(day)
                await step(f"{day} morning", lambda day=day: _morning(w, day))
                await step(f"{day} session", lambda day=day: _session(w, day, feed))
                await step(f"{day} close", lambda day=day: w.close_day(day))
                progress(f"day {n + 1}/{days} {day} done")
            # The run is over: no more faults or crashes, one last reconciliation as the next process would.
            injected = dict(sim.admin.faults()["counts"])
            sim.admin.clear_faults()
            w.crash_hook = None
            w.restart()
            w.at(day, time(16, 30))
            for _ in range(3):
                await w.reconcile_all(day)
        finally:
            await w.aclose()  # the last process's connections, and those of any left behind
        tokens.update(sim.engine.tokens.copy())
        secrets = [k for key in sim.engine.appkeys.values() for k in (key.appkey, key.secretkey)]
        result = _figures(w, secrets + sorted(tokens), log, steps)
        w.db.dispose()
    return {
        "users": users, "days": days, "fault_rate": fault_rate, "crash_rate": crash_rate, "seed": seed,
        "access": access, "resting_stops": resting_stops, "faults_injected": injected,
        "crashes": dict(crashes),
        "crash_points_covered": sorted(crashes), "steps_rerun": reruns, "feed_opened": feed.opened,
        "feed_reconnects": feed.reconnects, "feed_ticks": feed.ticks,
        "feed_ticks_after_reconnect": feed.ticks_after_reconnect, **result,
        "seconds": round(walltime.monotonic() - started, 1),
    }  # fmt: skip


async def _session(
    w: World, day: date, feed: FeedStats, step_minutes: int = 10, reconcile_every: int = 3
) -> None:
    """The intraday flow: on (re)start it reconciles first, resuming sells a crash left unsent; then it
    watches prices and reconciles every half hour, until the close. The watched codes are subscribed on
    the price feed: every tick it delivers goes through the exit book, as does each stock's price at every
    step; the checks compare the tiers with every price step of the simulator."""
    hours = hours_of(day)
    if w.now() >= datetime.combine(day, hours.open, tzinfo=KST):
        await w.reconcile_all(day)
    w.at(day, hours.open)
    w.rt.engine.load()
    end = datetime.combine(day, hours.close, tzinfo=KST)
    prices = await w.access.price_feed()
    feed.open()

    async def on_tick(code: str, price: int, at: datetime) -> None:
        # As the watch loop does: every tick of the feed goes through the exit book, between the steps too
        # (a take-profit touched for one step and given back is sold like any other).
        w.ticks.setdefault(code, []).append(Seen(at, price, w.now()))  # what the checks hold sells against
        for sell in w.rt.engine.on_price(code, price, at):
            await w.send_sell(sell, day)

    try:
        n = 0
        await prices.subscribe(sorted(w.watched()))
        # As the watch does when it (re)starts: the day's range catches up what a dead process missed.
        read = RecordingPrices(prices, w.ticks, w.now)  # the range it reads is what the checks hold it to
        gaps = read.gaps
        for sell in await exit_tasks.catch_up(w.rt.engine, read, sorted(w.watched()), w.now()):
            await w.send_sell(sell, day)
        while True:
            if read.gaps != gaps:  # as the watch does after a reconnect: the day's range, read again
                gaps = read.gaps
                for sell in await exit_tasks.catch_up(
                    w.rt.engine, read, sorted(w.watched()), w.now(), after_gap=True
                ):
                    await w.send_sell(sell, day)
            await prices.subscribe(sorted(w.watched()))
            await w.watch_once(day)
            n += 1
            if n % reconcile_every == 0:
                await w.reconcile_all(day)
            if w.now() >= end:
                break
            # The last step before the close stops at its final second: a crossing in the last minutes is
            # read while market orders are still taken, as a watcher reading live would (read after the
            # close, its sell would be refused, and the harness would blame the product for its own step).
            last = end - timedelta(seconds=1)
            nxt = min(end, w.now() + timedelta(minutes=step_minutes))
            w.sim.admin.set_clock(last if w.now() < last < nxt else nxt)
            await feed.drain(prices, on_tick=on_tick)
    finally:
        await prices.aclose()  # the process ends (or dies) with its feed
        feed.close()
    await w.reconcile_all(day)


async def _morning(w: World, day: date) -> None:
    w.at(day, time(9, 5))
    await w.reconcile_all(day)


def _exits_missed(w: World, path: PricePath) -> list[str]:
    """Stop or take-profit levels crossed on the simulator's price path while a position was open (armed,
    not yet closed, nothing sold since the crossing) with no sell of that position later the same day. The
    close's single price is not a crossing anyone could sell on that day: the next session's prices decide."""
    missed: list[str] = []
    with w.db.unit_of_work() as s:
        sold: dict[int, list[datetime]] = {}
        for strategy_id, at in s.execute(
            sa.select(OrderIntentRow.strategy_id, FillRow.executed_at)
            .join(FillRow, FillRow.intent_id == OrderIntentRow.id)
            .where(OrderIntentRow.side == Side.SELL)
        ):
            sold.setdefault(strategy_id, []).append(at)
        for st in s.scalars(sa.select(ThreeTierStrategy)):
            armed = st.armed_at
            if armed is None:
                continue
            for at, px in path.get(st.code, []):
                if at <= armed or (st.closed_at is not None and at >= st.closed_at):
                    continue
                if px > st.stop_loss_price and px < st.take_profit_price:
                    continue
                day = at.astimezone(KST).date()
                if at.astimezone(KST).time() >= hours_of(day).closing_auction_start:
                    continue  # the closing auction's print: no trade after it that day; the next open decides
                if not any(at <= t and t.astimezone(KST).date() == day for t in sold.get(st.id, [])):
                    level = "stop" if px <= st.stop_loss_price else "take-profit"
                    missed.append(f"{st.code}#{st.id}: {level} at {px} {at:%m-%d %H:%M}, not sold that day")
                break  # the first crossing decides
    return missed


def _stop_gaps(w: World, intents: list[OrderIntentRow], path: PricePath) -> dict[str, dict[str, float]]:
    """Virtual seconds from the first step at or through a stop to its sell: the broker's fill of a resting
    stop, or the watch's market sell being sent (this harness's watch looks every ten minutes)."""
    gaps: dict[str, list[float]] = {"resting": [], "watch": []}
    for i in intents:
        if i.tier is not Tier.STOP_LOSS or not i.order_no or not i.filled_quantity:
            continue
        order = w.sim.engine.orders.get(i.order_no)
        if order is None or not order.fills:
            continue
        resting = i.trade_type == "STOP_LIMIT"
        stop = i.stop_price if resting else None
        with w.db.unit_of_work() as s:
            st = s.get(ThreeTierStrategy, i.strategy_id)
            stop = stop or (st.stop_loss_price if st else None)
            since = (None if resting or st is None else st.armed_at) or order.placed_at
        crossed = next((at for at, px in path.get(i.code, []) if at >= since and stop and px <= stop), None)
        if crossed is not None:
            done = order.fills[0].at if resting else order.placed_at
            gaps["resting" if resting else "watch"].append(max((done - crossed).total_seconds(), 0.0))
    return {k: {"count": len(v), "mean": round(sum(v) / len(v), 1) if v else 0.0, "max": max(v, default=0.0)}
            for k, v in gaps.items()}  # fmt: skip


def _figures(w: World, secrets: list[str], log: RunLog, path: PricePath) -> dict[str, Any]:
    with w.db.unit_of_work() as s:
        intents = s.scalars(sa.select(OrderIntentRow)).all()
        signals = s.scalars(sa.select(TradingSignal)).all()
        buys_intended = len([i for i in intents if i.side is Side.BUY])
        placed = len([i for i in intents if i.order_no])
        access_rows = s.scalar(sa.select(sa.func.count()).select_from(AccessLog)) or 0
        refused = s.scalars(sa.select(AccessLog.reason).where(AccessLog.allowed.is_(False))).all()
        events = s.scalars(sa.select(SecurityEvent.rule)).all()
        keys_not_active = s.scalar(
            sa.select(sa.func.count()).where(UserApiKey.api_status != ApiStatus.ACTIVE)
        ) or 0  # fmt: skip
    broker = checks.broker_orders(w)
    originals = [o for orders in broker.values() for o in orders if not o["orig_order_no"]]
    claimed = Counter((i.account_no, i.order_no) for i in intents if i.order_no)
    duplicated = sum(1 for acct, orders in broker.items() for o in orders
                     if not o["orig_order_no"] and (acct, o["order_no"]) not in claimed)  # fmt: skip
    # Not sent on purpose: a buy whose session ended; a resting stop withdrawn for a market sell.
    on_purpose = ("not sent:", "withdrawn:")
    unsent = [i for i in intents if not i.order_no and (i.last_error or "").startswith(on_purpose)]
    unresolved = [i.key for i in intents if (i.last_error or "").startswith("outcome unknown when")]
    # Never reached the broker (or not known to have): a buy so is a missed trade; a protective sell so is a
    # lost exit. A resting stop is not counted (the watch covers its position), nor a sell the resting stop
    # made pointless by selling the shares first.
    never_sent = [i for i in intents if not i.order_no
                  and (i.last_error or "").startswith(("not sent:", "outcome unknown when"))
                  and i.last_error != SOLD_BY_RESTING_STOP and i.trade_type != "STOP_LIMIT"]  # fmt: skip
    missed_exits = _exits_missed(w, path)
    ended = ("REJECTED", "CANCELLED")
    lost = [f"{i.key} {i.status.value} {i.last_error or ''}"[:160] for i in intents
            if not i.order_no and i.status.value not in ended and i not in unsent
            and i.key not in unresolved]  # fmt: skip
    problems = {
        "traceability": checks.traceability(w), "limits": checks.limits(w), "agreement": checks.agreement(w),
        "tiers_follow_prices": checks.tiers_follow_prices(w),
    }  # fmt: skip
    dump: list[str] = []
    with w.db.engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                dump += [v.hex() if isinstance(v, bytes) else str(v) for v in row]
    text = "\n".join(dump)
    logged = "\n".join(log.lines)
    in_db = sum(1 for secret in secrets if secret in text)
    in_logs = sum(1 for secret in secrets if secret in logged)
    return {
        "signals": len(signals), "orders_intended": len(intents), "buys_intended": buys_intended,
        "orders_placed": placed, "broker_orders": len(originals), "orders_duplicated": duplicated,
        "orders_lost": len(lost), "lost": lost[:10], "not_sent_session_ended": len(unsent),
        "outcome_unknown_at_day_end": len(unresolved),
        "buys_not_sent": sum(1 for i in never_sent if i.side is Side.BUY),
        "sells_not_sent": sum(1 for i in never_sent if i.side is Side.SELL),
        "exits_missed": len(missed_exits), "exits_missed_detail": missed_exits[:10],
        "resting_stops_placed": sum(1 for i in intents if i.trade_type == "STOP_LIMIT" and i.order_no),
        "resting_stop_fills": sum(1 for i in intents if i.trade_type == "STOP_LIMIT" and i.filled_quantity),
        "stop_crossing_to_sell_seconds": _stop_gaps(w, list(intents), path),
        "mismatches": sum(len(v) for v in problems.values()),
        "problems": {k: v[:5] for k, v in problems.items()},
        "access_log_rows": access_rows, "access_refused": len(refused),
        "access_refusals": dict(Counter(r or "" for r in refused).most_common(5)),
        "security_events": dict(Counter(events)), "keys_not_active": keys_not_active,
        # Nobody attacks in this run: a key disabled here was disabled wrongly.
        "keys_wrongly_disabled": keys_not_active,
        "leaks": in_db + in_logs, "leaks_in_database": in_db, "leaks_in_logs": in_logs,
        "secrets_checked": len(secrets), "log_records_scanned": len(log.lines),
    }  # fmt: skip
