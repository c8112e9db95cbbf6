"""Pure report arithmetic over plain values (no database, no charts), so each number can be checked by hand.

A *position* is one three-tier strategy: it is closed when nothing is held any more. Its P&L is the sum of
its sells' recorded P&L (after fees and tax on both sides). A closed position is a win when that sum is
positive; it counts as stopped when any of its sells was the stop-loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True)
class Position:
    strategy_id: int
    code: str
    name: str
    entry_date: date
    entry_price: int
    quantity: int
    held: int
    status: str
    realized_pnl: int  # sum over its sells so far
    stopped: bool  # a stop-loss sell happened
    closed_on: date | None  # trading day of the last sell, when nothing is held any more
    tiers: dict[str, str]  # tier -> status (ACTIVE, EXECUTED, ...)

    @property
    def is_closed(self) -> bool:
        return self.held == 0 and self.closed_on is not None


@dataclass(frozen=True, slots=True)
class Performance:
    closed: int
    wins: int
    stops: int
    win_rate: float | None  # percent
    stop_trigger_rate: float | None  # percent
    average_holding_days: float | None  # trading days from entry to the last sell


def performance(positions: Sequence[Position], trading_days_between: HoldingDays) -> Performance:
    closed = [p for p in positions if p.is_closed]
    wins = sum(1 for p in closed if p.realized_pnl > 0)
    stops = sum(1 for p in closed if p.stopped)
    held_days = [trading_days_between(p.entry_date, p.closed_on) for p in closed if p.closed_on]
    return Performance(
        closed=len(closed),
        wins=wins,
        stops=stops,
        win_rate=round(100 * wins / len(closed), 1) if closed else None,
        stop_trigger_rate=round(100 * stops / len(closed), 1) if closed else None,
        average_holding_days=round(sum(held_days) / len(held_days), 2) if held_days else None,
    )


class HoldingDays:
    """Trading days from the entry day to the exit day (bought in the evening, sold next day: 1)."""

    def __init__(self, days: Sequence[date]) -> None:
        self._index = {d: i for i, d in enumerate(sorted(days))}

    def __call__(self, entry: date, exit_day: date) -> int:
        if entry in self._index and exit_day in self._index:
            return self._index[exit_day] - self._index[entry]
        return (exit_day - entry).days


def unrealized(held: int, entry_price: int, price: int) -> int:
    """Paper P&L of ``held`` shares at ``price`` (before the costs of selling)."""
    return (price - entry_price) * held


def drawdowns(equity: Sequence[int]) -> list[float]:
    """Drawdown in percent from the running peak at each point (0 or negative)."""
    out: list[float] = []
    peak = 0
    for value in equity:
        peak = max(peak, value)
        out.append(round(100 * (value - peak) / peak, 4) if peak > 0 else 0.0)
    return out


def max_drawdown(equity: Sequence[int]) -> float:
    """The deepest drawdown in percent (0 when the curve never fell)."""
    return min(drawdowns(equity), default=0.0)
