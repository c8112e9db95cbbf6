"""Each documented fill convention of the backtester on hand-built bars.

Entry at 10,000 KRW with the default limits buys 100 shares (1,000,000 KRW per stock); the tiers are the stop
at 9,500, the preserve at 10,400 (50 shares) and the take-profit at 10,800.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from autotrade.backtest.engine import UPPER_LIMIT_CLOSE
from autotrade.backtest.metrics import compute_metrics
from autotrade.domain.krx import KST
from tests.backtest.helpers import CODE, config, run, summary, weekdays

FLAT = (10_000, 10_000, 10_000, 10_000)


def test_buy_at_scan_close_floor_of_budget() -> None:
    result = run([FLAT])
    (buy,) = result.trades
    assert (buy.side.value, buy.quantity, buy.price, buy.basis.value) == ("BUY", 100, 10_000, "CLOSE")
    assert buy.fee == 150  # 1,000,000 x 0.015%
    assert result.equity[-1].cash == 10_000_000 - 1_000_000 - 150


def test_gap_below_stop_fills_everything_at_the_open() -> None:
    result = run([FLAT, (9_200, 9_300, 9_100, 9_250)])
    assert summary(result) == [(1, "STOP_LOSS", 100, 9_200, "OPEN")]


def test_gap_above_take_profit_fills_everything_at_the_open() -> None:
    result = run([FLAT, (11_000, 11_200, 10_900, 11_100)])
    assert summary(result) == [(1, "TAKE_PROFIT", 100, 11_000, "OPEN")]
    assert result.positions[0].exits == ("TAKE_PROFIT",)  # the preserve was jumped over


def test_gap_into_preserve_fills_half_at_the_open() -> None:
    result = run([FLAT, (10_500, 10_600, 10_450, 10_500)])
    assert summary(result) == [(1, "PRESERVE", 50, 10_500, "OPEN")]
    assert not result.positions[0].closed


def test_preserve_and_take_profit_fill_at_their_trigger_prices() -> None:
    result = run([FLAT, (10_100, 10_900, 10_050, 10_850)])
    assert summary(result) == [
        (1, "PRESERVE", 50, 10_400, "TRIGGER"),
        (1, "TAKE_PROFIT", 50, 10_800, "TRIGGER"),
    ]


def test_bar_touching_stop_and_take_profit_assumes_the_stop_first() -> None:
    result = run([FLAT, (10_000, 11_000, 9_400, 10_000)])
    assert summary(result) == [(1, "STOP_LOSS", 100, 9_500, "TRIGGER")]
    assert compute_metrics(result)["stop_trigger_rate"] == 1.0


def test_minute_bars_decide_the_order_of_levels() -> None:
    day = weekdays(2)[1]
    minutes = pd.DataFrame(
        [
            {"datetime": datetime(day.year, day.month, day.day, 9, 0, tzinfo=KST), "code": CODE,
             "open": 10_000, "high": 11_000, "low": 10_000, "close": 10_900},
            {"datetime": datetime(day.year, day.month, day.day, 9, 1, tzinfo=KST), "code": CODE,
             "open": 10_900, "high": 10_900, "low": 9_400, "close": 9_500},
        ]
    )  # fmt: skip
    result = run([FLAT, (10_000, 11_000, 9_400, 9_500)], minutes=minutes)
    assert summary(result) == [
        (1, "PRESERVE", 50, 10_400, "TRIGGER"),
        (1, "TAKE_PROFIT", 50, 10_800, "TRIGGER"),
    ]


def test_preserve_then_stop_on_a_later_day() -> None:
    result = run([FLAT, (10_100, 10_500, 10_000, 10_300), (10_000, 10_050, 9_400, 9_600)])
    assert summary(result) == [(1, "PRESERVE", 50, 10_400, "TRIGGER"), (2, "STOP_LOSS", 50, 9_500, "TRIGGER")]
    (position,) = result.positions
    assert position.closed and position.stop_triggered and position.holding_days == 2
    metrics = compute_metrics(result)
    assert metrics["trades"] == 1 and metrics["stop_trigger_rate"] == 1.0


def test_fees_and_sell_tax_to_the_won() -> None:
    # Entry 12,340: 1,000,000 // 12,340 = 81 shares = 999,540 KRW; tiers (ceil to tick): stop 11,730,
    # preserve 12,840 (40 shares), take-profit 13,330.
    result = run(
        [(12_340, 12_340, 12_340, 12_340), (12_400, 12_900, 12_350, 12_800), (12_500, 12_600, 11_700, 11_800)]
    )
    assert summary(result) == [
        (1, "PRESERVE", 40, 12_840, "TRIGGER"),
        (2, "STOP_LOSS", 41, 11_730, "TRIGGER"),
    ]
    buy, preserve, stop = result.trades
    # fee 0.015% and sell tax 0.20%, each truncated to the won
    assert (buy.amount, buy.fee, buy.tax) == (999_540, 149, 0)  # 149.931
    assert (preserve.amount, preserve.fee, preserve.tax) == (513_600, 77, 1_027)  # 77.04, 1,027.2
    assert (stop.amount, stop.fee, stop.tax) == (480_930, 72, 961)  # 72.1395, 961.86
    cash = 10_000_000 - 999_540 - 149 + 513_600 - 77 - 1_027 + 480_930 - 72 - 961
    assert cash == 9_992_704
    assert result.equity[-1].cash == cash and result.equity[-1].equity == cash
    assert [t.cash_flow for t in result.trades] == [-999_689, 512_496, 479_897]
    metrics = compute_metrics(result)
    assert metrics["fees_paid"] == 298 and metrics["taxes_paid"] == 1_988
    assert metrics["net_realised"] == cash - 10_000_000 == -7_296
    assert metrics["final_equity"] == cash and metrics["wins"] == 0


def test_max_holding_period_closes_at_the_close() -> None:
    bars = [
        FLAT,
        (10_050, 10_200, 9_900, 10_100),
        (10_100, 10_300, 9_800, 10_150),
        (10_000, 10_000, 10_000, 10_000),
    ]
    assert summary(run(bars)) == []  # default: no maximum
    result = run(bars, cfg=config(max_holding_days=2))
    assert summary(result) == [(2, "MAX_HOLDING", 100, 10_150, "CLOSE")]
    (position,) = result.positions
    assert position.closed and position.holding_days == 2 and not position.stop_triggered


def test_day_locked_at_lower_limit_does_not_fill_and_sells_at_the_next_open() -> None:
    # Previous close 10,000: the lower limit is 7,000; nobody buys, the committed stop sells the next morning.
    result = run([FLAT, (7_000, 7_000, 7_000, 7_000), (7_500, 7_800, 7_400, 7_600)])
    assert summary(result) == [(2, "STOP_LOSS", 100, 7_500, "OPEN")]


def test_close_at_upper_limit_is_not_bought() -> None:
    result = run([FLAT, (10_500, 13_000, 10_400, 13_000)], scan_days=(1,))
    assert result.trades == ()
    assert result.skipped == {UPPER_LIMIT_CLOSE: 1}
    assert run(
        [FLAT, (10_500, 13_000, 10_400, 13_000)], scan_days=(1,), cfg=config(buy_at_upper_limit_close=True)
    ).trades


def test_low_score_is_not_bought() -> None:
    result = run([FLAT, FLAT], score=6.9)
    assert result.trades == () and result.skipped == {"LOW_SCORE": 1}
