"""The weekly review: the week's performance per user and for the operator, from the ledger.

A week is Monday to Sunday. Its trades are the trade records dated in it (each fill of a buy or a sell). P&L
after costs is the sum of the week's sells' recorded P&L (the sell's fee and tax and the buy fee of the
shares sold are already taken off, as the daily report counts it). A position closed in the week (nothing
held any more) is a win when all its sells, whenever made, sum to more than zero. The tier mix counts the
exits made in the week, one per position and tier however many fills it took. Money is integer KRW.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa

from autotrade.domain.krx import KST
from autotrade.domain.models import TradeAction
from autotrade.store.db import Database
from autotrade.store.models import ThreeTierStrategy, TradeRecordRow

OPERATOR = "(all users)"


@dataclass(frozen=True, slots=True)
class WeekFigures:
    who: str  # a user id, or OPERATOR for every user together
    trades: int
    buys: int
    sells: int
    bought: int  # KRW
    sold: int  # KRW
    realized_pnl: int  # after fees and tax
    closed: int
    wins: int
    tier_mix: dict[str, int] = field(default_factory=dict)

    @property
    def win_rate(self) -> float | None:
        return round(100 * self.wins / self.closed, 1) if self.closed else None


@dataclass(frozen=True)
class WeeklyReview:
    first_day: date
    last_day: date
    users: tuple[WeekFigures, ...]
    operator: WeekFigures

    @property
    def empty(self) -> bool:
        return self.operator.trades == 0

    def as_json(self) -> dict[str, Any]:
        def one(f: WeekFigures) -> dict[str, Any]:
            return {**asdict(f), "win_rate": f.win_rate}

        return {"first_day": self.first_day.isoformat(), "last_day": self.last_day.isoformat(),
                "operator": one(self.operator), "users": [one(u) for u in self.users]}  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.as_json(), ensure_ascii=False, indent=2)

    def markdown(self) -> str:
        out = [f"# Weekly review {self.first_day} to {self.last_day}", ""]
        if self.empty:
            return "\n".join([*out, "No trades this week.", ""])
        out += ["| who | trades | buys | sells | bought (KRW) | sold (KRW) | P&L after costs (KRW) | closed "
                "| win rate | tier mix |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
        for f in (*self.users, self.operator):
            rate = "-" if f.win_rate is None else f"{f.win_rate:.1f}%"
            mix = ", ".join(f"{k} {v}" for k, v in sorted(f.tier_mix.items())) or "-"
            out.append(
                f"| {f.who} | {f.trades:,} | {f.buys:,} | {f.sells:,} | {f.bought:,} | {f.sold:,} "
                f"| {f.realized_pnl:+,} | {f.closed:,} | {rate} | {mix} |"
            )
        return "\n".join([*out, ""])


def week_of(day: date) -> tuple[date, date]:
    """Monday and Sunday of ``day``'s week."""
    monday = day - timedelta(days=day.weekday())
    return monday, monday + timedelta(days=6)


def weekly_review(db: Database, day: date, users: list[str] | None = None) -> WeeklyReview:
    """The review of the week holding ``day`` (optionally of ``users`` only)."""
    first, last = week_of(day)
    with db.unit_of_work() as s:
        q = sa.select(TradeRecordRow).where(TradeRecordRow.trading_day.between(first, last))
        if users:
            q = q.where(TradeRecordRow.user_id.in_(users))
        records = s.scalars(q.order_by(TradeRecordRow.id)).all()
        closed_q = sa.select(
            ThreeTierStrategy.id, ThreeTierStrategy.user_id, ThreeTierStrategy.closed_at
        ).where(ThreeTierStrategy.closed_at.is_not(None), ThreeTierStrategy.held_quantity == 0)
        closed = [
            (sid, uid)
            for sid, uid, at in s.execute(closed_q).all()
            if at is not None and first <= at.astimezone(KST).date() <= last and (not users or uid in users)
        ]
        results: dict[int, int] = defaultdict(int)
        if closed:
            for sid, pnl in s.execute(
                sa.select(TradeRecordRow.strategy_id, TradeRecordRow.profit_loss).where(
                    TradeRecordRow.strategy_id.in_([sid for sid, _ in closed]),
                    TradeRecordRow.action != TradeAction.BUY,
                )
            ).all():
                results[int(sid or 0)] += int(pnl or 0)
        rows = [
            (r.user_id, r.action, int(r.amount), int(r.profit_loss or 0), r.strategy_id, r.exit_reason)
            for r in records
        ]
    per_user = sorted({u for u, *_ in rows} | {u for _, u in closed})
    figures = tuple(_figures(u, [r for r in rows if r[0] == u], [c for c in closed if c[1] == u], results)
                    for u in per_user)  # fmt: skip
    return WeeklyReview(first, last, figures, _figures(OPERATOR, rows, closed, results))


def _figures(
    who: str, rows: list[tuple[Any, ...]], closed: list[tuple[int, str]], results: dict[int, int]
) -> WeekFigures:
    buys = [r for r in rows if r[1] is TradeAction.BUY]
    sells = [r for r in rows if r[1] is not TradeAction.BUY]
    exits = {(r[4], r[5].value if r[5] else "EXTERNAL") for r in sells}
    return WeekFigures(
        who=who,
        trades=len(rows),
        buys=len(buys),
        sells=len(sells),
        bought=sum(r[2] for r in buys),
        sold=sum(r[2] for r in sells),
        realized_pnl=sum(r[3] for r in sells),
        closed=len(closed),
        wins=sum(1 for sid, _ in closed if results.get(sid, 0) > 0),
        tier_mix=dict(sorted(Counter(reason for _, reason in exits).items())),
    )
