"""KRX rules: ticks, price limits, sessions, costs and the calendar, with hand-worked numbers."""

from datetime import date, datetime, time
from decimal import Decimal

import pytest

from autotrade.domain import calendar
from autotrade.domain.krx import (
    KST,
    CostRates,
    Session,
    ceil_to_tick,
    floor_to_tick,
    is_valid_tick,
    max_affordable_quantity,
    price_limits,
    session_at,
    tick_bands,
    tick_size,
)


@pytest.mark.parametrize(
    ("price", "tick"),
    [
        (1, 1),
        (1_999, 1),
        (2_000, 5),  # band edge: 2,000 starts the 5-won band
        (4_995, 5),
        (4_999, 5),
        (5_000, 10),
        (19_990, 10),
        (20_000, 50),
        (49_950, 50),
        (50_000, 100),
        (199_900, 100),
        (200_000, 500),
        (499_500, 500),
        (500_000, 1_000),
        (1_234_000, 1_000),
    ],
)
def test_tick_size_every_band_edge(price: int, tick: int) -> None:
    assert tick_size(price) == tick


def test_tick_size_rejects_negative() -> None:
    with pytest.raises(ValueError):
        tick_size(-1)


@pytest.mark.parametrize(
    ("raw", "down", "up"),
    [
        (Decimal("66500"), 66_500, 66_500),  # already on a 100-won tick
        (Decimal("66450"), 66_400, 66_500),
        (Decimal("19999.5"), 19_990, 20_000),  # ceil crosses into the 50-won band at its edge
        (Decimal("2001"), 2_000, 2_005),
        (Decimal("499999"), 499_500, 500_000),
        (Decimal("1999.2"), 1_999, 2_000),
    ],
)
def test_snap_to_tick(raw: Decimal, down: int, up: int) -> None:
    assert floor_to_tick(raw) == down
    assert ceil_to_tick(raw) == up
    assert is_valid_tick(down) and is_valid_tick(up)


@pytest.mark.parametrize(
    ("prev_close", "lower", "upper"),
    [
        # 60,000 x 1.3 = 78,000 (100-won tick, exact); x 0.7 = 42,000 (50-won tick, exact)
        (60_000, 42_000, 78_000),
        # 55,500 x 1.3 = 72,150 -> down to 72,100; x 0.7 = 38,850 -> 50-won tick, exact
        (55_500, 38_850, 72_100),
        # 10,050 x 1.3 = 13,065 -> 10-won tick -> 13,060; x 0.7 = 7,035 -> up to 7,040
        (10_050, 7_040, 13_060),
        # 1,000 x 1.3 = 1,300; x 0.7 = 700 (1-won ticks)
        (1_000, 700, 1_300),
        # 400,000 x 1.3 = 520,000 (1,000-won tick); x 0.7 = 280,000 (500-won tick)
        (400_000, 280_000, 520_000),
        # 3,333 x 1.3 = 4,332.9 -> 5-won tick -> 4,330; x 0.7 = 2,333.1 -> up to 2,335
        (3_333, 2_335, 4_330),
    ],
)
def test_price_limits(prev_close: int, lower: int, upper: int) -> None:
    assert price_limits(prev_close) == (lower, upper)
    assert lower >= prev_close * 0.7 and upper <= prev_close * 1.3


def test_price_limits_reject_non_positive() -> None:
    with pytest.raises(ValueError):
        price_limits(0)


@pytest.mark.parametrize(
    ("hhmm", "session"),
    [
        ((8, 29), Session.CLOSED),
        ((8, 30), Session.PRE_MARKET),
        ((8, 45), Session.OPENING_AUCTION),
        ((9, 0), Session.CONTINUOUS),
        ((15, 19), Session.CONTINUOUS),
        ((15, 20), Session.CLOSING_AUCTION),
        ((15, 35), Session.POST_CLOSE_GAP),
        ((15, 40), Session.AFTER_HOURS_CLOSE),
        ((16, 0), Session.AFTER_HOURS_SINGLE),
        ((18, 0), Session.CLOSED),
    ],
)
def test_sessions(hhmm: tuple[int, int], session: Session) -> None:
    assert session_at(datetime(2026, 11, 25, *hhmm, tzinfo=KST)) is session


def test_session_needs_aware_time() -> None:
    with pytest.raises(ValueError):
        session_at(datetime(2026, 11, 25, 10, 0))


def test_costs_to_the_won() -> None:
    """Sell of 100 shares at 72,800 = 7,280,000 KRW.

    fee 0.015% = 1,092 KRW; tax 0.20% = 14,560 KRW; proceeds 7,280,000 - 1,092 - 14,560 = 7,264,348.
    A buy of 13 x 70,000 = 910,000: fee 136.5 -> 136 (truncated), cost 910,136.
    """
    c = CostRates()
    assert c.fee(7_280_000) == 1_092
    assert c.sell_tax(7_280_000) == 14_560
    assert c.sell_proceeds(7_280_000) == 7_264_348
    assert c.buy_cost(910_000) == 910_136


def test_max_affordable_quantity_counts_the_fee() -> None:
    """1,000,000 KRW at 10,000: 100 shares would cost 1,000,150 with fee, so 99."""
    assert max_affordable_quantity(1_000_000, 10_000) == 100
    assert max_affordable_quantity(1_000_000, 10_000, CostRates()) == 99


def test_calendar_weekend_and_holiday() -> None:
    # 2026-09-24/25 are Chuseok holidays (Thu/Fri), 26/27 the weekend: Wednesday 23 -> Monday 28.
    assert calendar.is_trading_day(date(2026, 9, 23))
    assert not calendar.is_trading_day(date(2026, 9, 24))
    assert not calendar.is_trading_day(date(2026, 9, 26))  # Saturday
    assert calendar.next_trading_day(date(2026, 9, 23)) == date(2026, 9, 28)
    assert calendar.previous_trading_day(date(2026, 9, 28)) == date(2026, 9, 23)
    # Year-end closing day (Dec 31) is not a session; New Year's Day neither.
    assert calendar.next_trading_day(date(2026, 12, 30)) == date(2027, 1, 4)


def test_calendar_late_open_shifts_sessions() -> None:
    """First session of 2026 opens an hour late (10:00); every session boundary moves with it."""
    hours = calendar.hours_of(date(2026, 1, 2))
    assert hours.open == time(10, 0)
    assert hours.pre_market_start == time(9, 30)
    regular = calendar.hours_of(date(2026, 11, 25))
    assert (regular.open, regular.close) == (time(9, 0), time(15, 30))
    with pytest.raises(ValueError):
        calendar.hours_of(date(2026, 9, 24))


def test_calendar_range_is_checked() -> None:
    with pytest.raises(calendar.CalendarRangeError):
        calendar.is_trading_day(date(1990, 1, 2))


def test_tick_bands_agree_with_tick_size() -> None:
    """Each published band starts where tick_size changes: 2,000 is in the 5-won band, 1,999 in the 1-won."""
    bands = tick_bands()
    assert [lower for lower, _ in bands] == sorted((lower for lower, _ in bands), reverse=True)
    assert bands[-1][0] == 0
    for lower, tick in bands:
        assert tick_size(lower) == tick
        if lower > 0:
            assert tick_size(lower - 1) < tick
    assert (2_000, 5) in bands and tick_size(1_999) == 1
