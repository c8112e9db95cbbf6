"""A suspended day (거래정지: the stock has no bar while the market trades) holds the position; exits resume.

005930 is bought at the close of day 0 at 10,000 KRW: 100 shares (1,000,000 KRW per stock), stop 9,500,
preserve 10,400, take-profit 10,800. Another stock trades every day, so day 2 is a day of the timeline on
which 005930 alone has no bar.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from autotrade.backtest.data import MarketData
from autotrade.backtest.engine import BacktestResult, run_backtest
from tests.backtest.helpers import CODE, config, summary, weekdays

OTHER = "000660"
FLAT = (10_000, 10_000, 10_000, 10_000)


def run(ohlc: Sequence[tuple[int, int, int, int] | None], **cfg: int) -> BacktestResult:
    days = weekdays(len(ohlc))
    rows = [
        {"date": d.isoformat(), "code": CODE, "open": b[0], "high": b[1], "low": b[2], "close": b[3]}
        for d, b in zip(days, ohlc, strict=True)
        if b is not None
    ]
    rows += [
        {"date": d.isoformat(), "code": OTHER, "open": 50_000, "high": 50_000, "low": 50_000, "close": 50_000}
        for d in days
    ]
    scans = pd.DataFrame([{"date": days[0].isoformat(), "code": CODE, "name": "Samsung", "score": 9.0,
                           "price": 10_000}])  # fmt: skip
    data = MarketData.from_frames(pd.DataFrame(rows), scans, use_krx_calendar=False)
    return run_backtest(data, config(**cfg))


def test_suspended_day_holds_and_the_stop_sells_at_the_next_open() -> None:
    result = run([FLAT, (10_000, 10_000, 9_900, 9_900), None, (9_300, 9_400, 9_200, 9_350)])
    # Nothing on day 2 although the stock reopens through the stop: it sells at day 3's open.
    assert summary(result) == [(3, "STOP_LOSS", 100, 9_300, "OPEN")]
    # Day 2 holds 100 shares marked at the last close (day 1's 9,900).
    assert result.equity[2].holdings == 100 * 9_900
    assert result.equity[2].cash == result.equity[1].cash
    assert result.positions[0].holding_days == 3


def test_holding_limit_reached_while_suspended_sells_at_the_next_close() -> None:
    # max 2 days: due on day 2, which has no bar; sold at day 3's close instead.
    result = run([FLAT, FLAT, None, (10_000, 10_100, 9_900, 10_050)], max_holding_days=2)
    assert summary(result) == [(3, "MAX_HOLDING", 100, 10_050, "CLOSE")]


def test_preserve_resumes_after_the_suspension() -> None:
    result = run([FLAT, None, None, (10_100, 10_500, 10_000, 10_300), (10_300, 10_900, 10_200, 10_800)])
    assert summary(result) == [
        (3, "PRESERVE", 50, 10_400, "TRIGGER"),
        (4, "TAKE_PROFIT", 50, 10_800, "TRIGGER"),
    ]
