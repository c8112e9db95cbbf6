"""Boundaries of the KRX session clock, the price limits, the affordable quantity and the calendar's
ends: each value at and next to an edge, worked out by hand."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, tzinfo

import pytest

from autotrade.domain.calendar import (
    CalendarRangeError,
    _sessions,
    hours_of,
    is_trading_day,
    next_trading_day,
    previous_trading_day,
)
from autotrade.domain.krx import (
    KST,
    CostRates,
    Session,
    SessionTimes,
    ceil_to_tick,
    floor_to_tick,
    is_valid_tick,
    max_affordable_quantity,
    pct,
    price_limits,
    session_at,
    session_times,
    tick_size,
)
from autotrade.domain.models import require_aware, validate_code


def test_session_times_shift_each_half_of_the_day_by_its_own_offset() -> None:
    # Open 10:30 is 90 minutes late: pre-market 08:30-08:40 becomes 10:00-10:10. Close 16:45 is 75 minutes
    # late: the closing auction 15:20 -> 16:35, after-hours 15:40-16:00 -> 16:55-17:15, single price to
    # 18:00 -> 19:15.
    assert session_times(time(10, 30), time(16, 45)) == SessionTimes(
        pre_market_start=time(10, 0), pre_market_end=time(10, 10), open=time(10, 30),
        closing_auction_start=time(16, 35), close=time(16, 45), after_hours_close_start=time(16, 55),
        after_hours_close_end=time(17, 15), after_hours_single_end=time(19, 15),
    )  # fmt: skip
    # The first day of the year: open 10:00 (60 late), close as usual.
    assert session_times(time(10, 0), time(15, 30)) == SessionTimes(
        pre_market_start=time(9, 30), pre_market_end=time(9, 40), open=time(10, 0),
    )
    assert session_times(time(9, 0), time(15, 30)) == SessionTimes()


@pytest.mark.parametrize(
    ("at", "session"),
    [
        (time(8, 29, 59), Session.CLOSED),
        (time(8, 30), Session.PRE_MARKET),
        (time(8, 39, 59), Session.PRE_MARKET),
        (time(8, 40), Session.OPENING_AUCTION),
        (time(8, 59, 59), Session.OPENING_AUCTION),
        (time(9, 0), Session.CONTINUOUS),
        (time(15, 19, 59), Session.CONTINUOUS),
        (time(15, 20), Session.CLOSING_AUCTION),
        (time(15, 29, 59), Session.CLOSING_AUCTION),
        (time(15, 30), Session.POST_CLOSE_GAP),
        (time(15, 39, 59), Session.POST_CLOSE_GAP),
        (time(15, 40), Session.AFTER_HOURS_CLOSE),
        (time(15, 59, 59), Session.AFTER_HOURS_CLOSE),
        (time(16, 0), Session.AFTER_HOURS_SINGLE),
        (time(17, 59, 59), Session.AFTER_HOURS_SINGLE),
        (time(18, 0), Session.CLOSED),
    ],
)
def test_session_at_each_boundary(at: time, session: Session) -> None:
    assert session_at(datetime.combine(date(2026, 11, 25), at, tzinfo=KST)) is session


def test_session_at_needs_an_aware_moment() -> None:
    with pytest.raises(ValueError, match=r"moment must be timezone-aware$"):
        session_at(datetime(2026, 11, 25, 9, 0))
    with pytest.raises(ValueError, match=r"datetime must be timezone-aware$"):
        require_aware(datetime(2026, 11, 25, 9, 0))
    aware = datetime(2026, 11, 25, 9, 0, tzinfo=KST)
    assert require_aware(aware) is aware


def test_price_limits_at_the_smallest_prices() -> None:
    # Close 1: +-30 % is 0.7..1.3, snapped inward to 1..1. Close 10: 7..13.
    assert price_limits(1) == (1, 1)
    assert price_limits(10) == (7, 13)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="previous close must be positive"):
            price_limits(bad)


def test_max_affordable_quantity_edges() -> None:
    # Without costs: 10 // 3 = 3 (an int, not 3.33); 10 // 1 = 10; nothing for 0 or a negative budget.
    assert max_affordable_quantity(10, 3) == 3 and isinstance(max_affordable_quantity(10, 3), int)
    assert max_affordable_quantity(10, 1) == 10
    assert max_affordable_quantity(0, 1) == 0
    assert max_affordable_quantity(-5, 1) == 0
    costs = CostRates()
    assert max_affordable_quantity(-5, 1, costs) == 0
    # One share of 100,000 costs 100,000 + 15 (0.015 %): 100,000 does not buy it, 100,015 does exactly.
    assert max_affordable_quantity(100_000, 100_000, costs) == 0
    assert max_affordable_quantity(100_015, 100_000, costs) == 1
    # Two shares: 200,000 + 30 = 200,030; 200,029 buys one.
    assert max_affordable_quantity(200_029, 100_000, costs) == 1
    assert max_affordable_quantity(200_030, 100_000, costs) == 2
    for bad in (0, -1):
        with pytest.raises(ValueError, match="price must be positive"):
            max_affordable_quantity(10, bad)


def test_cost_rates_truncate_to_the_won() -> None:
    # Fee 0.015 %: 6,666,666 x 0.00015 = 999.9999 -> 999; 6,666,667 -> 1,000.00005 -> 1,000.
    # Tax 0.20 %: 499 x 0.002 = 0.998 -> 0; 500 -> 1; 1,000,499 -> 2,000.998 -> 2,000.
    c = CostRates()
    assert (c.fee(6_666_666), c.fee(6_666_667)) == (999, 1_000)
    assert (c.sell_tax(499), c.sell_tax(500), c.sell_tax(1_000_499)) == (0, 1, 2_000)


def test_the_calendar_ends() -> None:
    s = _sessions()
    first, last = s.first, s.last
    assert is_trading_day(first) and is_trading_day(last)
    assert next_trading_day(previous_trading_day(last)) == last
    assert previous_trading_day(next_trading_day(first)) == first
    with pytest.raises(CalendarRangeError, match="no trading day after"):
        next_trading_day(last)
    with pytest.raises(CalendarRangeError, match="no trading day before"):
        previous_trading_day(first)
    with pytest.raises(CalendarRangeError, match="outside the KRX calendar"):
        hours_of(first - timedelta(days=1))
    with pytest.raises(CalendarRangeError, match="outside the KRX calendar"):
        hours_of(last + timedelta(days=1))
    assert hours_of(first).open == time(10, 0)  # 2015-01-02, the year's first day, opens an hour late
    assert hours_of(last).close == time(15, 30)
    with pytest.raises(ValueError, match=r"is not a KRX trading day$"):
        hours_of(date(2026, 11, 28))  # a Saturday


def test_a_stock_code_is_six_characters() -> None:
    assert validate_code("005930") == "005930"
    with pytest.raises(ValueError, match="stock code must be six characters"):
        validate_code("5930")


def test_ticks_at_zero_and_one() -> None:
    # Zero is not a price: not a valid tick, rounds up to the first one (1), has no tick under it.
    assert not is_valid_tick(0) and is_valid_tick(1)
    assert ceil_to_tick(0) == 1 and ceil_to_tick(-5) == 1 and ceil_to_tick(1) == 1
    assert floor_to_tick(1) == 1
    with pytest.raises(ValueError, match=r"^no valid tick at or below 0$"):
        floor_to_tick(0)
    with pytest.raises(ValueError, match=r"^price must be non-negative, got -1$"):
        tick_size(-1)
    with pytest.raises(ValueError, match=r"^rate must be finite$"):
        pct(float("inf"))


class NoOffset(tzinfo):
    """A time zone that knows no offset: as unusable as none."""

    def utcoffset(self, dt: datetime | None) -> None:
        return None


def test_a_zone_without_an_offset_is_not_aware() -> None:
    with pytest.raises(ValueError, match=r"^datetime must be timezone-aware$"):
        require_aware(datetime(2026, 11, 25, 9, 0, tzinfo=NoOffset()))
