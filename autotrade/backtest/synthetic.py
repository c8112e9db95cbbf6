"""A seeded synthetic market: N stocks x Y years of daily bars and a scan of signals every day.

Same ``(stocks, years, seed, signals_per_day)``, same frames, on every machine: one
:class:`numpy.random.Generator` (PCG64) seeded with ``seed`` draws everything in a fixed order.

- Days: XKRX trading days from 2015-01-02 for ``years`` calendar years while the KRX calendar reaches that
  far, else weekdays from the same start (the backtest then uses the bar dates as its timeline).
- Prices: each stock starts log-uniformly between 2,000 and 200,000 KRW; its log price mean-reverts slowly
  around the start (AR(1), 2.5% daily shocks), so ten years stay in a realistic range. The close is snapped
  down to a valid KRX tick and kept within the day's price limits (+-30% of the previous close, as
  :func:`autotrade.domain.krx.price_limits`); the open gaps around the previous close, the high and low
  reach beyond open and close, all valid ticks within the limits.
- Scans: each day ``signals_per_day`` distinct stocks with scores uniform in [5, 10] (one decimal) at the
  day's close, so roughly 60% pass the default minimum score of 7.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from autotrade.domain import calendar
from autotrade.domain.krx import tick_bands
from autotrade.domain.models import ScanRow

if TYPE_CHECKING:
    import pandas as pd

    from autotrade.backtest.data import MarketData

START = date(2015, 1, 2)
I64 = NDArray[np.int64]


def tick_of(prices: I64) -> I64:
    """KRX tick size for each price (vectorised :func:`autotrade.domain.krx.tick_size`)."""
    bands = sorted(tick_bands())  # ascending lower bounds, the first being 0
    bounds = np.array([lower for lower, _ in bands[1:]], dtype=np.int64)
    ticks = np.array([tick for _, tick in bands], dtype=np.int64)
    return np.asarray(ticks[np.searchsorted(bounds, prices, side="right")], dtype=np.int64)


def floor_ticks(prices: I64) -> I64:
    """Largest valid tick <= each (integer) price (vectorised :func:`autotrade.domain.krx.floor_to_tick`)."""
    p = np.maximum(prices, 1)
    t = tick_of(p)
    return np.asarray((p // t) * t, dtype=np.int64)


def ceil_ticks(prices: I64) -> I64:
    """Smallest valid tick >= each (integer) price (vectorised :func:`autotrade.domain.krx.ceil_to_tick`)."""
    p = np.maximum(prices, 1)
    t = tick_of(p)
    return np.asarray(-(-p // t) * t, dtype=np.int64)


def limits_of(prev_close: I64) -> tuple[I64, I64]:
    """(lower, upper) price limits of each previous close, exactly as :func:`price_limits` computes them."""
    upper = floor_ticks(prev_close * 13 // 10)
    lower = ceil_ticks(-(-prev_close * 7 // 10))
    return lower, upper


def synthetic_days(years: int) -> list[date]:
    """Trading days of the synthetic market (see the module docstring)."""
    if years <= 0:
        raise ValueError("years must be positive")
    end = date(START.year + years, 1, 1) - timedelta(days=1)
    try:
        calendar.is_trading_day(end)  # raises when the calendar does not reach ``end``
        return calendar.trading_days(START, end)
    except calendar.CalendarRangeError:
        weekdays = np.arange(np.datetime64(START), np.datetime64(end) + 1, dtype="datetime64[D]")
        weekdays = weekdays[np.is_busday(weekdays)]
        return [d.item() for d in weekdays]


def synthetic_prices(n_days: int, stocks: int, rng: np.random.Generator) -> tuple[I64, I64, I64, I64, I64]:
    """(open, high, low, close, first previous close) arrays, ``(days, stocks)`` int64 KRW."""
    start = np.exp(rng.uniform(np.log(2_000), np.log(200_000), stocks))
    shocks = np.clip(rng.normal(0.0, 0.025, (n_days, stocks)), -0.2, 0.2)
    gaps = np.clip(rng.normal(0.0, 0.01, (n_days, stocks)), -0.1, 0.1)
    up = np.abs(rng.normal(0.0, 0.015, (n_days, stocks)))
    down = np.abs(rng.normal(0.0, 0.015, (n_days, stocks)))

    prev0 = floor_ticks(start.astype(np.int64))
    close = np.empty((n_days, stocks), dtype=np.int64)
    deviation = np.zeros(stocks)
    log_start = np.log(prev0.astype(np.float64))
    prev = prev0
    for t in range(n_days):
        deviation = 0.995 * deviation + shocks[t]
        raw = floor_ticks(np.exp(log_start + deviation).astype(np.int64))
        lower, upper = limits_of(prev)
        prev = np.clip(raw, lower, upper)
        close[t] = prev

    prev_close = np.vstack([prev0[None, :], close[:-1]])
    lower, upper = limits_of(prev_close)
    open_ = np.clip(floor_ticks((prev_close * np.exp(gaps)).astype(np.int64)), lower, upper)
    top = np.maximum(open_, close)
    bottom = np.minimum(open_, close)
    high = np.minimum(np.maximum(floor_ticks((top * np.exp(up)).astype(np.int64)), top), upper)
    low = np.maximum(np.minimum(ceil_ticks((bottom * np.exp(-down)).astype(np.int64)), bottom), lower)
    return open_, high, low, close, prev0


@dataclass(frozen=True)
class SyntheticArrays:
    days: list[date]
    codes: list[str]
    open: I64  # (days, stocks)
    high: I64
    low: I64
    close: I64
    volume: I64
    picks: I64  # (days, signals): the stocks scanned each day
    scores: NDArray[np.float64]  # (days, signals)


def synthetic_arrays(stocks: int, years: int, seed: int, signals_per_day: int = 10) -> SyntheticArrays:
    """The synthetic market as arrays; every draw in one fixed order (see the module docstring)."""
    if stocks <= 0 or stocks > 999_999:
        raise ValueError("stocks must be between 1 and 999,999")
    if signals_per_day < 0:
        raise ValueError("signals_per_day must not be negative")
    days = synthetic_days(years)
    rng = np.random.default_rng(seed)
    open_, high, low, close, _ = synthetic_prices(len(days), stocks, rng)
    volume = rng.integers(1_000, 1_000_000, (len(days), stocks), dtype=np.int64)
    codes = [f"{i:06d}" for i in range(1, stocks + 1)]
    k = min(signals_per_day, stocks)
    picks = np.empty((len(days), k), dtype=np.int64)
    for t in range(len(days)):
        picks[t] = rng.choice(stocks, size=k, replace=False)
    scores = np.round(rng.uniform(5.0, 10.0, (len(days), k)), 1)
    return SyntheticArrays(days, codes, open_, high, low, close, volume, picks, scores)


def synthetic(
    stocks: int, years: int, seed: int, signals_per_day: int = 10
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(bars, scans) frames for ``stocks`` stocks over ``years`` years; see the module docstring.

    Bars: ``date, code, open, high, low, close, volume`` ordered by date then code (``code`` categorical).
    Scans: ``date, code, name, score, price``.
    """
    import pandas as pd

    a = synthetic_arrays(stocks, years, seed, signals_per_day)
    days, codes = a.days, a.codes
    day_axis = np.array(days, dtype="datetime64[D]").astype("datetime64[ns]")
    bars = pd.DataFrame(
        {
            "date": np.repeat(day_axis, stocks),
            "code": pd.Categorical.from_codes(np.tile(np.arange(stocks), len(days)), categories=codes),
            "open": a.open.ravel(),
            "high": a.high.ravel(),
            "low": a.low.ravel(),
            "close": a.close.ravel(),
            "volume": a.volume.ravel(),
        }
    )
    k = a.picks.shape[1]
    day_index = np.repeat(np.arange(len(days)), k)
    stock_index = a.picks.ravel()
    scans = pd.DataFrame(
        {
            "date": day_axis[day_index],
            "code": [codes[i] for i in stock_index.tolist()],
            "name": [f"Synthetic {codes[i]}" for i in stock_index.tolist()],
            "score": a.scores.ravel(),
            "price": a.close[day_index, stock_index],
        }
    )
    return bars, scans


def synthetic_market(
    stocks: int, years: int, seed: int, signals_per_day: int = 10, *, use_krx_calendar: bool = True
) -> MarketData:
    """The same market as ``MarketData.from_frames(*synthetic(...))``, built without pandas."""
    from autotrade.backtest.data import MarketData, build_timeline, scans_by_day

    a = synthetic_arrays(stocks, years, seed, signals_per_day)
    timeline, source = build_timeline(a.days, use_krx_calendar)
    if list(timeline) != a.days:  # never expected: the synthetic days are the timeline
        raise ValueError("synthetic days are not the backtest timeline")
    ohlc = np.stack([a.open, a.high, a.low, a.close], axis=2)
    scans = [
        (a.days[t], ScanRow(a.codes[i], f"Synthetic {a.codes[i]}", float(score), int(a.close[t, i])))
        for t in range(len(a.days))
        for i, score in zip(a.picks[t].tolist(), a.scores[t].tolist(), strict=True)
    ]
    return MarketData(
        days=tuple(a.days),
        codes=tuple(a.codes),
        ohlc=np.ascontiguousarray(ohlc, dtype=np.int64),
        calendar=source,
        bars=int(np.count_nonzero(a.close)),
        **scans_by_day(scans, tuple(a.days)),
    )
