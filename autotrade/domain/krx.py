"""KRX market rules: tick sizes, daily price limits, sessions, fees and tax.

All prices are integer KRW.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, time
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

KST = ZoneInfo("Asia/Seoul")

# Unified KOSPI/KOSDAQ/KONEX tick table (호가가격단위), in force since 2023-01-25.
# Source: KRX 유가증권시장 업무규정 시행세칙 제7조 / 코스닥시장 업무규정 시행세칙 (개정 2023-01-25),
# KRX press release "호가가격단위 개선" (2022-12). Each row: (lower bound inclusive, tick).
_TICK_TABLE: tuple[tuple[int, int], ...] = (
    (500_000, 1_000),
    (200_000, 500),
    (50_000, 100),
    (20_000, 50),
    (5_000, 10),
    (2_000, 5),
    (0, 1),
)

PRICE_LIMIT_RATE = Decimal("0.30")


def tick_size(price: int) -> int:
    """Tick of the band that ``price`` falls in (KRX unified table)."""
    if price < 0:
        raise ValueError(f"price must be non-negative, got {price}")
    for lower, tick in _TICK_TABLE:
        if price >= lower:
            return tick
    raise AssertionError("unreachable")


def tick_bands() -> tuple[tuple[int, int], ...]:
    """The tick table as ``(lower bound inclusive, tick)`` rows, highest band first.

    For code that snaps whole arrays of prices at once (the backtester's synthetic market); the scalar
    functions here stay the reference.
    """
    return _TICK_TABLE


def is_valid_tick(price: int) -> bool:
    return price > 0 and price % tick_size(price) == 0


def floor_to_tick(price: Decimal | int) -> int:
    """Largest valid tick price <= ``price``."""
    p = Decimal(price)
    if p < 1:
        raise ValueError(f"no valid tick at or below {price}")
    base = int(p.to_integral_value(rounding=ROUND_FLOOR))
    tick = tick_size(base)
    return (base // tick) * tick


def ceil_to_tick(price: Decimal | int) -> int:
    """Smallest valid tick price >= ``price``.

    Band boundaries (2,000, 5,000, 20,000, 50,000, 200,000, 500,000) are multiples of the upper band's
    tick, so rounding up within the lower band never lands on an invalid price.
    """
    p = Decimal(price)
    if p <= 0:
        return 1
    base = int(p.to_integral_value(rounding=ROUND_CEILING))
    tick = tick_size(base)
    return -(-base // tick) * tick


def price_limits(prev_close: int) -> tuple[int, int]:
    """(lower, upper) daily price limits: ±30% of the previous close, snapped inward to valid ticks.

    KRX truncates the limit width below the tick unit, so the upper limit rounds down and the lower limit
    rounds up; neither ever lies beyond ±30%.
    """
    if prev_close <= 0:
        raise ValueError(f"previous close must be positive, got {prev_close}")
    base = Decimal(prev_close)
    upper = floor_to_tick(base * (1 + PRICE_LIMIT_RATE))
    lower = ceil_to_tick(base * (1 - PRICE_LIMIT_RATE))
    return lower, upper


def clamp_to_limits(price: int, prev_close: int) -> int:
    lower, upper = price_limits(prev_close)
    return min(max(price, lower), upper)


class Session(StrEnum):
    """Trading sessions of a KRX day (regular times; the calendar may shift open and close)."""

    CLOSED = "closed"
    PRE_MARKET = "pre_market"  # 08:30-08:40, off-hours at the previous close (trde_tp 61)
    OPENING_AUCTION = "opening_auction"  # 08:40-09:00 orders collected, single price at the open
    CONTINUOUS = "continuous"  # 09:00-15:20
    CLOSING_AUCTION = "closing_auction"  # 15:20-15:30 orders collected, single price at the close
    POST_CLOSE_GAP = "post_close_gap"  # 15:30-15:40 no trading
    AFTER_HOURS_CLOSE = "after_hours_close"  # 15:40-16:00 at today's close (trde_tp 81)
    AFTER_HOURS_SINGLE = "after_hours_single"  # 16:00-18:00 single price every 10 min, ±10% (trde_tp 62)


@dataclass(frozen=True, slots=True)
class SessionTimes:
    """Session boundaries for one day, local KST times.

    Regular day: open 09:00, close 15:30. On late-open days (first trading day of the year, the national
    college entrance exam day) the exchange shifts every session by the same offset, which
    :func:`session_times` derives from the calendar's open and close.
    """

    pre_market_start: time = time(8, 30)
    pre_market_end: time = time(8, 40)
    open: time = time(9, 0)
    closing_auction_start: time = time(15, 20)
    close: time = time(15, 30)
    after_hours_close_start: time = time(15, 40)
    after_hours_close_end: time = time(16, 0)
    after_hours_single_end: time = time(18, 0)


REGULAR_SESSION_TIMES = SessionTimes()


def _shift(t: time, minutes: int) -> time:
    total = t.hour * 60 + t.minute + minutes
    return time(total // 60, total % 60)


def session_times(open_at: time, close_at: time) -> SessionTimes:
    """Session boundaries for a day whose regular session runs ``open_at``-``close_at``."""
    open_shift = (open_at.hour * 60 + open_at.minute) - 9 * 60
    close_shift = (close_at.hour * 60 + close_at.minute) - (15 * 60 + 30)
    r = REGULAR_SESSION_TIMES
    return SessionTimes(
        pre_market_start=_shift(r.pre_market_start, open_shift),
        pre_market_end=_shift(r.pre_market_end, open_shift),
        open=open_at,
        closing_auction_start=_shift(r.closing_auction_start, close_shift),
        close=close_at,
        after_hours_close_start=_shift(r.after_hours_close_start, close_shift),
        after_hours_close_end=_shift(r.after_hours_close_end, close_shift),
        after_hours_single_end=_shift(r.after_hours_single_end, close_shift),
    )


def session_at(moment: datetime, times: SessionTimes = REGULAR_SESSION_TIMES) -> Session:
    """Which session ``moment`` (timezone-aware) is in, for a trading day with ``times``."""
    if moment.tzinfo is None:
        raise ValueError("moment must be timezone-aware")
    t = moment.astimezone(KST).time()
    if times.pre_market_start <= t < times.pre_market_end:
        return Session.PRE_MARKET
    if times.pre_market_end <= t < times.open:
        return Session.OPENING_AUCTION
    if times.open <= t < times.closing_auction_start:
        return Session.CONTINUOUS
    if times.closing_auction_start <= t < times.close:
        return Session.CLOSING_AUCTION
    if times.close <= t < times.after_hours_close_start:
        return Session.POST_CLOSE_GAP
    if times.after_hours_close_start <= t < times.after_hours_close_end:
        return Session.AFTER_HOURS_CLOSE
    if times.after_hours_close_end <= t < times.after_hours_single_end:
        return Session.AFTER_HOURS_SINGLE
    return Session.CLOSED


MARKET_OPEN_SESSIONS = frozenset({Session.OPENING_AUCTION, Session.CONTINUOUS, Session.CLOSING_AUCTION})


@dataclass(frozen=True, slots=True)
class CostRates:
    """Brokerage fee (both sides) and securities transaction tax (sells), in percent."""

    fee_rate: Decimal = Decimal("0.015")
    sell_tax_rate: Decimal = Decimal("0.20")

    def fee(self, amount: int) -> int:
        """Brokerage fee in KRW, truncated to the won (Kiwoom truncates below 1 won)."""
        return int((Decimal(amount) * self.fee_rate / 100).to_integral_value(rounding=ROUND_FLOOR))

    def sell_tax(self, amount: int) -> int:
        """Securities transaction tax on a sell, truncated to the won."""
        return int((Decimal(amount) * self.sell_tax_rate / 100).to_integral_value(rounding=ROUND_FLOOR))

    def buy_cost(self, amount: int) -> int:
        """Cash a buy of ``amount`` consumes: amount plus fee."""
        return amount + self.fee(amount)

    def sell_proceeds(self, amount: int) -> int:
        """Cash a sell of ``amount`` returns: amount minus fee and tax."""
        return amount - self.fee(amount) - self.sell_tax(amount)


def max_affordable_quantity(budget: int, price: int, costs: CostRates | None = None) -> int:
    """floor(budget / price), reduced while price × qty plus the buy fee would exceed the budget."""
    if price <= 0:
        raise ValueError(f"price must be positive, got {price}")
    qty = max(budget, 0) // price
    if costs is None:
        return qty
    while qty > 0 and costs.buy_cost(qty * price) > budget:
        qty -= 1
    return qty


def pct(value: float) -> Decimal:
    """A float percentage as an exact decimal (5.0 -> Decimal('5.0')), avoiding binary float error."""
    if not math.isfinite(value):
        raise ValueError("rate must be finite")
    return Decimal(str(value))
