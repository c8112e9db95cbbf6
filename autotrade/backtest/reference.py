"""The plain reference loop: the same day loop as the engine, reading bars the obvious way.

No dense arrays and no indexes: the bar rows are walked once in date order; each trading day's bars go into a
plain ``{code: Bar}`` dict and each stock's last close into another, updated as the days pass. The
:class:`autotrade.backtest.engine.Simulation` (exits, buys, books) is the very same object the engine uses,
so the two differ only in how a bar is found; a test and ``bench/backtest.py`` check that they produce
identical trades. It is the yardstick for the engine's speed, and a second reading of the input that does
not share the engine's indexing code.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd

from autotrade.backtest.config import BacktestConfig
from autotrade.backtest.data import bar_columns, build_timeline, minute_bars, scan_rows, scans_by_day
from autotrade.backtest.engine import (
    OUTSIDE_BARS,
    BacktestResult,
    Simulation,
    progress_bar,
    session_times_for,
)
from autotrade.backtest.fills import Bar, MinuteBar


class _PlainDay:
    """:class:`autotrade.backtest.engine.DayBars` over two dicts, refilled every day."""

    def __init__(self, minutes: dict[tuple[str, date], tuple[MinuteBar, ...]]) -> None:
        self.day = date.min
        self.today: dict[str, Bar] = {}
        self.last_close: dict[str, int] = {}  # before today
        self.all_minutes = minutes

    def bar(self, code: str) -> Bar | None:
        return self.today.get(code)

    def prev_close(self, code: str) -> int | None:
        return self.last_close.get(code)

    def mark(self, code: str) -> int | None:
        bar = self.today.get(code)
        return bar.close if bar is not None else self.last_close.get(code)

    def minutes(self, code: str) -> Sequence[MinuteBar]:
        return self.all_minutes.get((code, self.day), ())


def run_reference(
    bars: pd.DataFrame,
    scans: pd.DataFrame,
    config: BacktestConfig,
    minutes: pd.DataFrame | None = None,
    *,
    progress: bool = False,
) -> BacktestResult:
    """Run the product's rules over the frames with plain per-row Python look-ups."""
    cols = bar_columns(bars)
    order = np.argsort(cols.days, kind="stable")
    row_days = [d.item() for d in cols.days[order]]
    row_codes = cols.codes.to_numpy(dtype=object)[order].tolist()
    row_ohlc = list(
        zip(
            cols.open[order].tolist(),
            cols.high[order].tolist(),
            cols.low[order].tolist(),
            cols.close[order].tolist(),
            strict=True,
        )
    )
    days, source = build_timeline(sorted(set(row_days)), config.use_krx_calendar)
    per_day = scans_by_day(scan_rows(scans), days)
    sim = Simulation(config)
    sim.skip(OUTSIDE_BARS, per_day["scans_outside"])
    hours = session_times_for(source)
    view = _PlainDay(minute_bars(minutes))
    k, n = 0, len(row_days)
    with progress_bar(progress, len(days), "reference") as advance:
        for i, day in enumerate(days):
            view.day = day
            view.today = {}
            while k < n and row_days[k] == day:
                code = str(row_codes[k])
                if code in view.today:
                    raise ValueError("bars: more than one bar for a stock on a day")
                view.today[code] = Bar(*row_ohlc[k])
                k += 1
            sim.trading_day(i, day, hours(day), view, per_day["scans"][i])
            for code, bar in view.today.items():
                view.last_close[code] = bar.close
            advance()
    return sim.result(bars=n, stocks=len(set(row_codes)), calendar_source=source)
