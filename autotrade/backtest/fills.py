"""Fill conventions: one trading day of prices replayed through the live exit state machine.

Nothing here decides an exit. A bar is turned into the price ticks a live feed would have seen at the
moments that matter, each tick goes to :meth:`ExitStrategy.apply` (the same object live trading arms), and
every sell intent it returns is filled at the price of that tick:

- the open is the first tick of the day: a tier whose level the open is already through (a gap) sells at
  the open; so does an exit committed on an earlier day whose order could not fill;
- then the conservative path down from the open to the low: a tick at the stop price when the low reaches
  it, so the stop fills at its trigger price;
- then up from the low to the high: a tick at the preserve price, then at the take-profit price, each when
  the high reaches it, filling at the trigger price. The stop is thereby assumed to come first whenever a
  bar touches it and an upper level;
- minute bars for the stock and day, when given, replace the daily path: each minute bar is walked the same
  way (its open, down to its low, up to its high), so they decide the order of the levels;
- tier prices are valid KRX ticks (:func:`autotrade.domain.exits.tier_prices`), so "filled at the trigger"
  is the first traded price at or through the level on a continuous path;
- fill prices never lie outside the day's price limits (:func:`autotrade.domain.krx.price_limits` of the
  previous close); a day locked at the lower limit (high = low = lower limit) has no buyers, so sells do not
  fill: their orders end unfilled (``SellEnded``) and the committed exit sells at the next open;
- a position held ``max_holding_days`` without an exit is sold at the close (:func:`close_at_close`); the
  state machine learns it as the broker's holding going to zero (``HoldingSynced(0)``), as it would for a
  position closed outside its tiers. Fees and tax are charged by the caller with
  :class:`autotrade.domain.krx.CostRates`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from autotrade.domain.exits import ExitStrategy, HoldingSynced, PriceTick, SellEnded, SellFilled
from autotrade.domain.krx import price_limits
from autotrade.domain.models import ExitReason, Tier


@dataclass(frozen=True, slots=True)
class Bar:
    """One daily bar, integer KRW."""

    open: int
    high: int
    low: int
    close: int


@dataclass(frozen=True, slots=True)
class MinuteBar:
    at: datetime
    open: int
    high: int
    low: int
    close: int


class FillBasis(StrEnum):
    """Which price a fill took."""

    OPEN = "OPEN"  # the (minute) open was already through the level, or an earlier exit was still owed
    TRIGGER = "TRIGGER"  # reached within the bar: filled at the tier's trigger price
    CLOSE = "CLOSE"  # the close (buys; the maximum holding period)


@dataclass(frozen=True, slots=True)
class ExitFill:
    reason: ExitReason
    quantity: int
    price: int
    at: datetime
    basis: FillBasis


REASON_OF_TIER = {
    Tier.STOP_LOSS: ExitReason.STOP_LOSS,
    Tier.PRESERVE: ExitReason.PRESERVE,
    Tier.TAKE_PROFIT: ExitReason.TAKE_PROFIT,
}


def locked_at_lower_limit(bar: Bar, prev_close: int | None) -> bool:
    """The whole day traded at the lower price limit: sellers queued, no buyers for a market sell."""
    return prev_close is not None and bar.high == bar.low == price_limits(prev_close)[0]


def closed_at_upper_limit(bar: Bar, prev_close: int | None) -> bool:
    """The day closed at the upper price limit: buyers queue at the close, so an after-hours buy waits."""
    return prev_close is not None and bar.close == price_limits(prev_close)[1]


def replay_day(
    strategy: ExitStrategy,
    bar: Bar,
    *,
    prev_close: int | None,
    at_open: datetime,
    minutes: Sequence[MinuteBar] = (),
) -> list[ExitFill]:
    """Feed one day of prices to ``strategy``; returns the exits filled, in order.

    ``prev_close`` is the stock's last close before this day (None: unknown, no price limits applied).
    The caller applies ``DayEnd`` afterwards, as live trading does at the close.
    """
    if strategy.is_closed:
        return []
    limits = price_limits(prev_close) if prev_close is not None else None
    if locked_at_lower_limit(bar, prev_close):
        for intent in strategy.apply(PriceTick(bar.open, at_open)):
            strategy.apply(SellEnded(intent.tier, intent.quantity, at_open))
        return []
    fills: list[ExitFill] = []
    if minutes:
        for m in minutes:
            _walk(strategy, m.open, m.high, m.low, m.at, limits, fills)
            if strategy.is_closed:
                break
    else:
        _walk(strategy, bar.open, bar.high, bar.low, at_open, limits, fills)
    return fills


def close_at_close(
    strategy: ExitStrategy, bar: Bar, *, prev_close: int | None, at_close: datetime
) -> ExitFill | None:
    """Sell whatever ``strategy`` still holds at the close (maximum holding period); None if it cannot."""
    if strategy.is_closed or strategy.held <= 0 or locked_at_lower_limit(bar, prev_close):
        return None
    quantity = strategy.held
    strategy.apply(HoldingSynced(0, at_close))
    return ExitFill(ExitReason.MAX_HOLDING, quantity, bar.close, at_close, FillBasis.CLOSE)


def _walk(
    s: ExitStrategy,
    open_: int,
    high: int,
    low: int,
    at: datetime,
    limits: tuple[int, int] | None,
    fills: list[ExitFill],
) -> None:
    _tick(s, open_, at, FillBasis.OPEN, limits, fills)
    if s.is_closed:
        return
    if low <= s.prices.stop_loss < open_:
        _tick(s, s.prices.stop_loss, at, FillBasis.TRIGGER, limits, fills)
    for level in (s.prices.preserve, s.prices.take_profit):
        if s.is_closed:
            return
        if low < level <= high:
            _tick(s, level, at, FillBasis.TRIGGER, limits, fills)


def _tick(
    s: ExitStrategy,
    price: int,
    at: datetime,
    basis: FillBasis,
    limits: tuple[int, int] | None,
    fills: list[ExitFill],
) -> None:
    if limits is not None:
        price = min(max(price, limits[0]), limits[1])
    for intent in s.apply(PriceTick(price, at)):
        s.apply(SellFilled(intent.tier, intent.quantity, price, at))
        fills.append(ExitFill(REASON_OF_TIER[intent.tier], intent.quantity, price, at, basis))
