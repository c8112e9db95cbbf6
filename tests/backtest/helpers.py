"""Hand-built markets for the backtest tests: a few weekdays, one or two stocks, explicit bars."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import pandas as pd

from autotrade.backtest.config import BacktestConfig
from autotrade.backtest.data import MarketData
from autotrade.backtest.engine import BacktestResult, TradeRow, run_backtest
from autotrade.domain.models import Side

CODE = "005930"
START = date(2024, 3, 4)  # a Monday; the tests use the bar dates as the timeline (no KRX calendar)


def weekdays(n: int, start: date = START) -> list[date]:
    out: list[date] = []
    d = start
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += timedelta(days=1)
    return out


def config(**overrides: Any) -> BacktestConfig:
    return BacktestConfig(use_krx_calendar=False, **overrides)


def frames(
    ohlc: Sequence[tuple[int, int, int, int]],
    *,
    code: str = CODE,
    scan_days: Sequence[int] = (0,),
    score: float = 9.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bars of one stock, one per weekday from START; a scan row on each of ``scan_days``."""
    days = weekdays(len(ohlc))
    bars = pd.DataFrame(
        [
            {"date": d.isoformat(), "code": code, "open": o, "high": h, "low": lo, "close": c, "volume": 1000}
            for d, (o, h, lo, c) in zip(days, ohlc, strict=True)
        ]
    )
    scans = pd.DataFrame(
        [
            {
                "date": days[i].isoformat(),
                "code": code,
                "name": "Samsung",
                "score": score,
                "price": ohlc[i][3],
            }
            for i in scan_days
        ],
        columns=["date", "code", "name", "score", "price"],
    )
    return bars, scans


def run(
    ohlc: Sequence[tuple[int, int, int, int]],
    minutes: pd.DataFrame | None = None,
    cfg: BacktestConfig | None = None,
    **kw: Any,
) -> BacktestResult:
    bars, scans = frames(ohlc, **kw)
    data = MarketData.from_frames(bars, scans, minutes, use_krx_calendar=False)
    return run_backtest(data, cfg or config())


def sells(result: BacktestResult) -> list[TradeRow]:
    return [t for t in result.trades if t.side is Side.SELL]


def summary(result: BacktestResult) -> list[tuple[int, str, int, int, str]]:
    """(day index, reason, quantity, price, basis) of every sell."""
    days = [e.day for e in result.equity]
    return [(days.index(t.day), t.reason, t.quantity, t.price, t.basis.value) for t in sells(result)]
