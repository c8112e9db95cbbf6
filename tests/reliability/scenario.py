"""A seeded run of many trading days for several users against the simulator with broker faults drawn at
a set rate and process crashes injected at every step of the order protocol; each failed step is re-run
as Prefect would (a fresh process: the services rebuilt over the same database). Afterwards: every intended
order placed exactly once, exits against the price path, broker and database agreeing to the won, limits,
and no secret in the database. ``run`` returns the figures ``bench/faults.py`` prints."""

from __future__ import annotations

import random
import tempfile
import time as walltime
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from autotrade.domain.calendar import hours_of, next_trading_day
from autotrade.domain.krx import KST
from autotrade.domain.models import Side
from autotrade.sim.server import running_simulator
from autotrade.store.models import OrderIntentRow, TradingSignal
from tests.trading import checks
from tests.trading.harness import Trader, World, make_world

FAULT_KINDS = ("http_500", "http_429", "latency", "drop_after_accept", "token_expiry")


class Crash(Exception):
    """The worker died at this point of the order protocol."""


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
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    work = work or Path(tempfile.mkdtemp(prefix="autotrade-faults-"))
    rng = random.Random(seed)
    codes = _codes(12)
    crashes: Counter[str] = Counter()
    reruns = 0
    started = walltime.monotonic()
    start = datetime.combine(first_day, time(15, 0), tzinfo=KST)
    with running_simulator(seed=seed, start=start, volatility=0.006, after_hours_fill_rate=0.85) as sim:
        sim.admin.add_stocks([
            {"code": c, "name": f"종목{i}", "prev_close": p}
            for i, (c, p) in enumerate(zip(codes, [4_150, 8_900, 12_350, 23_400, 48_750, 61_200, 98_500,
                                                    15_200, 7_770, 33_050, 55_000, 1_980], strict=True))
        ])  # fmt: skip
        traders = [
            Trader(f"u{i:03d}", f"{5_300_000_000 + i:010d}", 30_000_000, 4_000_000) for i in range(users)
        ]
        w = make_world(sim, db_url or f"sqlite:///{work / 'faults.db'}", work, traders, max_stock_count=5,
                       max_per_stock=1_000_000, order_settle_seconds=1)  # fmt: skip

        def crash_hook(point: str) -> None:
            if rng.random() < crash_rate:
                crashes[point] += 1
                raise Crash(point)

        w.crash_hook = crash_hook
        w.restart()
        for i, kind in enumerate(FAULT_KINDS):
            extra = {"latency_ms": 30} if kind == "latency" else {}
            sim.admin.add_fault(kind, probability=fault_rate, seed=seed * 100 + i, **extra)

        async def step(name: str, work_fn: Callable[[], Awaitable[object]]) -> None:
            nonlocal reruns
            for attempt in range(20):
                try:
                    await work_fn()
                    return
                except Exception as exc:  # a crash or a broker failure: a new process runs the step again
                    progress(f"  {name}: {type(exc).__name__} ({exc}); re-run {attempt + 1}")
                    reruns += 1
                    w.restart()
            raise RuntimeError(f"{name} did not complete in 20 attempts")

        day = first_day
        for n in range(days):
            scan = w.scan_for(rng.sample(codes, 6), [round(rng.uniform(7.2, 9.8), 2) for _ in range(6)])
            await step(f"{day} evening", lambda day=day, scan=scan: w.evening(day, scan))
            day = next_trading_day(day)
            await step(f"{day} morning", lambda day=day: _morning(w, day))
            await step(f"{day} session", lambda day=day: _session(w, day))
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
        secrets = [k for key in sim.engine.appkeys.values() for k in (key.appkey, key.secretkey)]
        secrets += [t.value for t in sim.engine.tokens.values()]
        result = _figures(w, secrets)
    return {
        "users": users, "days": days, "fault_rate": fault_rate, "crash_rate": crash_rate, "seed": seed,
        "faults_injected": injected, "crashes": dict(crashes), "crash_points_covered": sorted(crashes),
        "steps_rerun": reruns, **result, "seconds": round(walltime.monotonic() - started, 1),
    }  # fmt: skip


async def _session(w: World, day: date, step_minutes: int = 10, reconcile_every: int = 3) -> None:
    """The intraday flow: on (re)start it reconciles first, resuming sells a crash left unsent; then it
    watches prices and reconciles every half hour, until the close."""
    hours = hours_of(day)
    if w.now() >= datetime.combine(day, hours.open, tzinfo=KST):
        await w.reconcile_all(day)
    w.at(day, hours.open)
    w.rt.engine.load()
    end = datetime.combine(day, hours.close, tzinfo=KST)
    n = 0
    while True:
        await w.watch_once(day)
        n += 1
        if n % reconcile_every == 0:
            await w.reconcile_all(day)
        if w.now() >= end:
            break
        w.sim.admin.set_clock(min(end, w.now() + timedelta(minutes=step_minutes)))
    await w.reconcile_all(day)


async def _morning(w: World, day: date) -> None:
    w.at(day, time(9, 5))
    await w.reconcile_all(day)


def _figures(w: World, secrets: list[str]) -> dict[str, Any]:
    with w.db.unit_of_work() as s:
        intents = s.scalars(sa.select(OrderIntentRow)).all()
        signals = s.scalars(sa.select(TradingSignal)).all()
        buys_intended = len([i for i in intents if i.side is Side.BUY])
        placed = len([i for i in intents if i.order_no])
    broker = checks.broker_orders(w)
    originals = [o for orders in broker.values() for o in orders if not o["orig_order_no"]]
    claimed = Counter((i.account_no, i.order_no) for i in intents if i.order_no)
    duplicated = sum(1 for acct, orders in broker.items() for o in orders
                     if not o["orig_order_no"] and (acct, o["order_no"]) not in claimed)  # fmt: skip
    unsent = [i for i in intents if not i.order_no and (i.last_error or "").startswith("not sent:")]
    unresolved = [i.key for i in intents if (i.last_error or "").startswith("outcome unknown when")]
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
    leaks = sum(1 for secret in secrets if secret in text)
    return {
        "signals": len(signals), "orders_intended": len(intents), "buys_intended": buys_intended,
        "orders_placed": placed, "broker_orders": len(originals), "orders_duplicated": duplicated,
        "orders_lost": len(lost), "lost": lost[:10], "not_sent_session_ended": len(unsent),
        "outcome_unknown_at_day_end": len(unresolved),
        "mismatches": sum(len(v) for v in problems.values()),
        "problems": {k: v[:5] for k, v in problems.items()},
        "leaks": leaks, "secrets_checked": len(secrets),
    }  # fmt: skip
