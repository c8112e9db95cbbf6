"""Domain functions the other unit tests reach only through callers: fills and their average price, the
daily price-limit clamp, calendar ranges and the KST date of a moment, removing a strategy from the exit
book. Every expected value is worked out by hand in the comments."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from autotrade.domain.calendar import trading_day_of, trading_days
from autotrade.domain.exit_book import ExitBook
from autotrade.domain.exits import ExitStrategy, SellEnded, SellFilled
from autotrade.domain.krx import KST, clamp_to_limits
from autotrade.domain.models import Fill, Side, Tier, average_price

AT = datetime(2026, 11, 25, 10, 0, tzinfo=KST)


def fill(quantity: int, price: int) -> Fill:
    return Fill(order_no="1", code="005930", side=Side.BUY, quantity=quantity, price=price, at=AT)


def test_a_fill_needs_a_positive_quantity_and_price_and_an_aware_time() -> None:
    smallest = fill(1, 1)
    assert smallest.amount == 1
    assert fill(3, 70_100).amount == 210_300  # 3 x 70,100
    for quantity in (0, -1):
        with pytest.raises(ValueError, match=r"fill quantity must be positive$"):
            fill(quantity, 70_000)
    for price in (0, -1):
        with pytest.raises(ValueError, match=r"fill price must be positive$"):
            fill(1, price)
    with pytest.raises(ValueError, match=r"timezone-aware$"):
        Fill(order_no="1", code="005930", side=Side.BUY, quantity=1, price=1, at=datetime(2026, 11, 25, 10))


def test_average_price_is_volume_weighted_and_rounded_half_up() -> None:
    # 10 x 70,000 + 5 x 70,100 = 1,050,500 over 15 shares = 70,033.33 -> 70,033.
    assert average_price([fill(10, 70_000), fill(5, 70_100)]) == 70_033
    # 100 + 101 over 2 = 100.5 -> 101 (half up); 2 x 100 + 101 over 3 = 100.33 -> 100;
    # 100 + 2 x 101 over 3 = 100.67 -> 101.
    assert average_price([fill(1, 100), fill(1, 101)]) == 101
    assert average_price([fill(2, 100), fill(1, 101)]) == 100
    assert average_price([fill(1, 100), fill(2, 101)]) == 101
    assert average_price([fill(7, 4_150)]) == 4_150
    with pytest.raises(ValueError, match=r"no filled quantity$"):
        average_price([])


def test_clamp_to_the_daily_limits() -> None:
    # Previous close 10,000: +-30 % is 7,000 and 13,000, both on the 10-won tick of that range.
    assert clamp_to_limits(20_000, 10_000) == 13_000
    assert clamp_to_limits(13_010, 10_000) == 13_000
    assert clamp_to_limits(13_000, 10_000) == 13_000
    assert clamp_to_limits(9_990, 10_000) == 9_990
    assert clamp_to_limits(7_000, 10_000) == 7_000
    assert clamp_to_limits(6_990, 10_000) == 7_000
    assert clamp_to_limits(1, 10_000) == 7_000


def test_trading_days_include_both_ends() -> None:
    # The week of Monday 2026-11-23: five trading days; the weekend is not one; Monday the 30th is.
    week = [date(2026, 11, d) for d in (23, 24, 25, 26, 27)]
    assert trading_days(date(2026, 11, 23), date(2026, 11, 29)) == week
    assert trading_days(date(2026, 11, 23), date(2026, 11, 23)) == [date(2026, 11, 23)]
    assert trading_days(date(2026, 11, 27), date(2026, 11, 30)) == [date(2026, 11, 27), date(2026, 11, 30)]
    assert trading_days(date(2026, 11, 28), date(2026, 11, 29)) == []
    assert trading_days(date(2026, 11, 30), date(2026, 11, 23)) == []


def test_the_trading_day_of_a_moment_is_its_date_in_seoul() -> None:
    # 15:00:01 UTC on the 24th is 00:00:01 KST on the 25th; 14:59:59 UTC is still the 24th in Seoul.
    assert trading_day_of(datetime(2026, 11, 24, 15, 0, 1, tzinfo=UTC)) == date(2026, 11, 25)
    assert trading_day_of(datetime(2026, 11, 24, 14, 59, 59, tzinfo=UTC)) == date(2026, 11, 24)
    new_york = timezone(timedelta(hours=-5))
    assert trading_day_of(datetime(2026, 11, 24, 10, 0, tzinfo=new_york)) == date(2026, 11, 25)  # 00:00 KST
    with pytest.raises(ValueError, match=r"timezone-aware$"):
        trading_day_of(datetime(2026, 11, 24, 10, 0))


def test_a_removed_strategy_leaves_the_book_and_its_ticks() -> None:
    """A committed exit (stop fired, 4 of 10 sold, the order ended with 6 unsold) sits in the stock's
    committed set that every tick visits; once removed, no tick reaches it and the other stays."""
    book: ExitBook[str] = ExitBook()
    a = ExitStrategy.arm("005930", 70_000, 10)  # stop 66,500
    book.add("a", a)
    book.add("b", ExitStrategy.arm("005930", 64_000, 3))  # stop 60,800, preserve 66,600
    assert "a" in book and "b" in book and "c" not in book and len(book) == 2
    [(key, stop)] = book.on_price("005930", 66_000, AT)
    assert (key, stop.tier, stop.quantity) == ("a", Tier.STOP_LOSS, 10)
    book.apply("a", SellFilled(Tier.STOP_LOSS, 4, 66_000, AT))
    book.apply("a", SellEnded(Tier.STOP_LOSS, 6, AT))
    assert book.get("a").committed and book.get("a").free == 6
    assert book.remove("a") is a
    assert "a" not in book and len(book) == 1
    assert book.on_price("005930", 65_000, AT) == []  # a's committed stop is gone; b's stop is 60,800
    [(key, _)] = book.on_price("005930", 60_700, AT)
    assert key == "b"
    with pytest.raises(KeyError):
        book.remove("a")
