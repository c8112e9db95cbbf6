"""Metrics of a backtest, computed from its fills and its daily equity.

Definitions (fractions, not percent; money in integer KRW):

- ``trades``: positions closed (a round trip: one buy, one or more sells); ``fills`` counts every row of
  the trades file; ``open_positions`` are still held at the end (marked at the last close, not counted);
- ``win_rate``: closed positions whose net result after the buy fee, sell fees and tax is above zero;
- ``stop_trigger_rate``: closed positions in which the stop-loss sold (alone or after the preserve);
- ``average_holding_days``: trading days from the buy (scan day) to the last sell, over closed positions;
- ``total_return``: final equity / initial capital - 1; ``cagr`` over calendar years (365.25 days) from the
  first to the last day; ``max_drawdown``: the largest fall of the daily equity from its running peak (the
  initial capital counts as the first peak), as a positive fraction;
- ``sharpe``: mean / standard deviation of daily equity returns x sqrt(252), risk-free rate zero;
- ``profit_factor``: gross profit / gross loss over closed positions (null when nothing lost);
- ``turnover``: (bought + sold) / 2 / average daily equity over the whole run; ``turnover_annual`` per year;
- ``fees_paid`` brokerage fees on both sides, ``taxes_paid`` securities transaction tax on sells.

Floats are rounded to six decimals so the JSON reads the same on every run.
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any

from autotrade.domain.models import ExitReason, Side

if TYPE_CHECKING:
    from autotrade.backtest.engine import BacktestResult

TRADING_DAYS_PER_YEAR = 252
DIGITS = 6


def _r(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, DIGITS)


def drawdowns(result: BacktestResult) -> list[float]:
    """Daily drawdown from the running peak of equity (the initial capital is the first peak), >= 0."""
    peak = result.config.initial_capital
    out = []
    for point in result.equity:
        peak = max(peak, point.equity)
        out.append(1 - point.equity / peak if peak > 0 else 0.0)
    return out


def daily_returns(result: BacktestResult) -> list[float]:
    prev = result.config.initial_capital
    out = []
    for point in result.equity:
        out.append(point.equity / prev - 1 if prev > 0 else 0.0)
        prev = point.equity
    return out


def compute_metrics(result: BacktestResult) -> dict[str, Any]:
    cfg = result.config
    closed = [p for p in result.positions if p.closed]
    n = len(closed)
    pnl = [p.net_pnl for p in closed]
    gross_profit = sum(x for x in pnl if x > 0)
    gross_loss = -sum(x for x in pnl if x < 0)
    holding = [p.holding_days for p in closed if p.holding_days is not None]

    initial = cfg.initial_capital
    final = result.equity[-1].equity if result.equity else initial
    first_day = result.equity[0].day if result.equity else None
    last_day = result.equity[-1].day if result.equity else None
    years = (last_day - first_day).days / 365.25 if first_day and last_day else 0.0
    cagr = (final / initial) ** (1 / years) - 1 if years > 0 and final > 0 else None
    returns = daily_returns(result)
    sharpe = None
    if len(returns) >= 2:
        sd = statistics.stdev(returns)
        if sd > 0:
            sharpe = statistics.fmean(returns) / sd * math.sqrt(TRADING_DAYS_PER_YEAR)
    bought = sum(t.amount for t in result.trades if t.side is Side.BUY)
    sold = sum(t.amount for t in result.trades if t.side is Side.SELL)
    average_equity = statistics.fmean(p.equity for p in result.equity) if result.equity else float(initial)
    turnover = (bought + sold) / 2 / average_equity if average_equity > 0 else None
    exits: dict[str, int] = {r.value: 0 for r in ExitReason if r is not ExitReason.EXTERNAL}
    for t in result.trades:
        if t.side is Side.SELL:
            exits[t.reason] = exits.get(t.reason, 0) + 1

    return {
        "trades": n,
        "fills": len(result.trades),
        "positions_opened": len(result.positions),
        "open_positions": len(result.positions) - n,
        "wins": sum(1 for x in pnl if x > 0),
        "losses": sum(1 for x in pnl if x <= 0),
        "win_rate": _r(sum(1 for x in pnl if x > 0) / n) if n else None,
        "stop_trigger_rate": _r(sum(1 for p in closed if p.stop_triggered) / n) if n else None,
        "average_holding_days": _r(statistics.fmean(holding)) if holding else None,
        "total_return": _r(final / initial - 1),
        "cagr": _r(cagr),
        "max_drawdown": _r(max(drawdowns(result), default=0.0)),
        "sharpe": _r(sharpe),
        "profit_factor": _r(gross_profit / gross_loss) if gross_loss > 0 else None,
        "turnover": _r(turnover),
        "turnover_annual": _r(turnover / years) if turnover is not None and years > 0 else None,
        "fees_paid": sum(t.fee for t in result.trades),
        "taxes_paid": sum(t.tax for t in result.trades),
        "gross_profit": gross_profit,
        "gross_loss": gross_loss,
        "net_realised": sum(pnl),
        "bought_amount": bought,
        "sold_amount": sold,
        "initial_capital": initial,
        "final_equity": final,
        "final_cash": result.equity[-1].cash if result.equity else initial,
        "first_day": first_day.isoformat() if first_day else None,
        "last_day": last_day.isoformat() if last_day else None,
        "trading_days": len(result.equity),
        "years": _r(years),
        "bars": result.bars,
        "stocks": result.stocks,
        "calendar": result.calendar,
        "exits_by_reason": exits,
        "skipped_signals": dict(result.skipped),
        "config": cfg.as_record(),
    }
