"""``autotrade demo``: several trading days through the real flows on the embedded stack.

Per trading day, on the simulator's virtual clock (KST):
09:05 ``morning_fill_and_arm`` -> 09:05-15:30 ``intraday_reconcile`` (the clock runs; exits fire on the
real-time feed) -> 15:40 ``evening_signal_and_buy`` on the day's scan (waits for the 16:00 fills) ->
16:30 ``daily_report``. The first day starts with the evening run; the last one ends with the report.
"""

from __future__ import annotations

import json
import random
import time as walltime
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from autotrade.domain.calendar import previous_trading_day, trading_days
from autotrade.domain.krx import KST
from autotrade.domain.models import Side, Tier, TradeAction
from autotrade.store.models import EquitySnapshot, OrderIntentRow, ThreeTierStrategy, TradeRecordRow

Say = Callable[[str], None]
# A lively market: intraday steps of 0.35%, a 3-8% jump now and then, 2% opening gaps.
MARKET = {"volatility": 0.0035, "jump_probability": 0.003, "gap_volatility": 0.02}


@dataclass
class DaySummary:
    day: str
    buy_orders: int = 0
    bought: int = 0  # KRW filled
    positions_armed: int = 0
    watched: int = 0
    stop_loss: int = 0
    preserve: int = 0
    take_profit: int = 0
    realized_pnl: int = 0
    equity: int = 0
    report: str = ""
    flow_runs: list[str] = field(default_factory=list)


@dataclass
class DemoResult:
    days: list[DaySummary]
    users: int
    seconds: float
    prefect_ui: str
    data_dir: str
    notifications: str

    @property
    def tiers_fired(self) -> dict[str, int]:
        return {
            "stop_loss": sum(d.stop_loss for d in self.days),
            "preserve": sum(d.preserve for d in self.days),
            "take_profit": sum(d.take_profit for d in self.days),
        }

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "tiers_fired": self.tiers_fired}


def demo_days(n: int, today: date) -> list[date]:
    """The ``n`` trading days ending with the last trading day before ``today``."""
    end = previous_trading_day(today)
    days = trading_days(end - timedelta(days=3 * n + 14), end)
    return days[-n:]


async def run_demo(
    *,
    days: int,
    users: int,
    seed: int,
    data_dir: Path,
    say: Say,
    prefect_ui: str = "",
    speed: float = 3600.0,
    stocks: int = 40,
    today: date | None = None,
) -> DemoResult:
    from autotrade.demo.stack import embedded_stack
    from flows.daily_report import daily_report
    from flows.evening_signal_and_buy import evening_signal_and_buy
    from flows.intraday_reconcile import intraday_reconcile
    from flows.morning_fill_and_arm import morning_fill_and_arm

    started = walltime.monotonic()
    calendar = demo_days(days, today or datetime.now(KST).date())
    rng = random.Random(seed)  # noqa: S311 - simulated scans, not security
    notes_path = data_dir / "notifications.txt"
    summaries: list[DaySummary] = []
    with (
        notes_path.open("w", encoding="utf-8") as notes,
        embedded_stack(
            data_dir, seed=seed, stocks=stocks, notifications=notes,
            start=datetime.combine(calendar[0], time(15, 0), tzinfo=KST),
            sim_options=MARKET, speed=speed,
        ) as stack,
    ):  # fmt: skip
        say(f"simulator on {stack.sim.base_url} (virtual clock, seed {seed}); "
            f"database {stack.settings.database_url}")  # fmt: skip
        registered = await stack.register_users(users)
        say(f"{len(registered)} users registered through the vault (keys sealed with the local KMS provider)")

        async def flow(summary: DaySummary, name: str, call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
            t0 = walltime.monotonic()
            result = await call
            summary.flow_runs.append(name)
            say(f"  {name:<24} {walltime.monotonic() - t0:5.1f}s  {_brief(result)}")
            return result

        try:
            for i, day in enumerate(calendar):
                summary = DaySummary(day.isoformat())
                say(f"day {i + 1}/{len(calendar)}  {day:%Y-%m-%d (%a)}")
                if i > 0:
                    stack.at(day, time(9, 5))
                    await flow(summary, "morning_fill_and_arm", morning_fill_and_arm(trading_day=day))
                    watch = await flow(summary, "intraday_reconcile", intraday_reconcile(trading_day=day))
                    summary.watched = int(watch.get("watched", 0))
                if i < len(calendar) - 1:
                    stack.at(day, time(15, 36))
                    stack.write_scan(day, rng)
                    stack.at(day, time(15, 40))
                    await flow(summary, "evening_signal_and_buy", evening_signal_and_buy(trading_day=day))
                stack.at(day, time(16, 30))
                report = await flow(summary, "daily_report", daily_report(trading_day=day))
                summary.report = str(report.get("out_dir", ""))
                _fill_summary(stack.db, day, summary)
                summaries.append(summary)
                say(_day_line(summary))
        finally:
            await stack.access.aclose()
    return DemoResult(summaries, users, round(walltime.monotonic() - started, 1), prefect_ui, str(data_dir),
                      str(notes_path))  # fmt: skip


def _brief(result: dict[str, Any]) -> str:
    keys = ("orders", "invested", "positions_armed", "armed", "ticks", "sells_fired", "watched", "users")
    return ", ".join(f"{k}={result[k]:,}" if isinstance(result[k], int) else f"{k}={result[k]}"
                     for k in keys if k in result)  # fmt: skip


def _fill_summary(db: Any, day: date, out: DaySummary) -> None:
    with db.unit_of_work() as s:
        buys = s.scalars(
            sa.select(OrderIntentRow).where(
                OrderIntentRow.trading_day == day, OrderIntentRow.side == Side.BUY
            )
        ).all()
        out.buy_orders = sum(1 for b in buys if b.order_no)
        out.bought = sum(b.filled_amount for b in buys)
        out.positions_armed = (
            s.scalar(
                sa.select(sa.func.count(ThreeTierStrategy.id)).where(ThreeTierStrategy.entry_date == day)
            )
            or 0
        )
        sells = s.scalars(
            sa.select(TradeRecordRow).where(
                TradeRecordRow.trading_day == day, TradeRecordRow.action != TradeAction.BUY
            )
        ).all()
        fired = {(r.strategy_id, r.exit_reason) for r in sells}
        out.stop_loss = sum(1 for _, r in fired if r is not None and r.value == Tier.STOP_LOSS.value)
        out.preserve = sum(1 for _, r in fired if r is not None and r.value == Tier.PRESERVE.value)
        out.take_profit = sum(1 for _, r in fired if r is not None and r.value == Tier.TAKE_PROFIT.value)
        out.realized_pnl = sum(r.profit_loss or 0 for r in sells)
        out.equity = (
            s.scalar(
                sa.select(sa.func.coalesce(sa.func.sum(EquitySnapshot.equity), 0)).where(
                    EquitySnapshot.trading_day == day
                )
            )
            or 0
        )


def _day_line(d: DaySummary) -> str:
    return (
        f"  => buys {d.buy_orders} ({d.bought:,} KRW filled), exits armed {d.positions_armed}, "
        f"tiers fired: stop {d.stop_loss} / preserve {d.preserve} / take-profit {d.take_profit}, "
        f"realized {d.realized_pnl:+,} KRW, equity {d.equity:,} KRW"
    )


def write_json(result: DemoResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), ensure_ascii=False, indent=2), encoding="utf-8")
