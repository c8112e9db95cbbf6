"""The exit state machine's record of events and its refusals: every event it acts on is kept in its
history with the status it led to, and each impossible report is refused with a message that says what."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from autotrade.domain.exits import (
    DayEnd,
    ExitStrategy,
    HoldingSynced,
    IllegalTransition,
    PriceTick,
    SellEnded,
    SellFilled,
)
from autotrade.domain.krx import KST
from autotrade.domain.models import Tier

AT = datetime(2026, 11, 25, 10, 0, tzinfo=KST)


def stopped(quantity: int = 10) -> tuple[ExitStrategy, PriceTick]:
    """Armed at 70,000 (stop 66,500) and the stop fired for every share."""
    s = ExitStrategy.arm("005930", 70_000, quantity)
    tick = PriceTick(66_500, AT)
    [intent] = s.apply(tick)
    assert (intent.tier, intent.quantity) == (Tier.STOP_LOSS, quantity)
    return s, tick


def test_the_history_keeps_each_event_it_acted_on() -> None:
    s, tick = stopped()
    fill = SellFilled(Tier.STOP_LOSS, 4, 66_500, AT + timedelta(seconds=1))
    ended = SellEnded(Tier.STOP_LOSS, 6, AT + timedelta(seconds=2))
    s.apply(fill)
    s.apply(ended)
    assert [event for event, _ in s.history] == [tick, fill, ended]
    assert s.in_flight[Tier.STOP_LOSS] == 0 and s.free == 6


def test_a_day_end_releases_even_a_single_share_in_flight() -> None:
    s, tick = stopped(1)
    assert s.in_flight[Tier.STOP_LOSS] == 1
    day_end = DayEnd(AT + timedelta(hours=6))
    s.apply(day_end)
    assert s.in_flight[Tier.STOP_LOSS] == 0 and s.free == 1
    assert s.history[0][0] is tick and s.history[-1][0] is day_end
    assert [e.at for e, _ in s.history if isinstance(e, SellEnded)] == [day_end.at]


def test_a_one_won_tick_still_fires_the_stop() -> None:
    s = ExitStrategy.arm("000001", 100, 3)  # stop 95
    [intent] = s.apply(PriceTick(1, AT))
    assert (intent.tier, intent.quantity) == (Tier.STOP_LOSS, 3)


def test_impossible_reports_are_refused_with_what_was_wrong() -> None:
    s, _ = stopped()
    with pytest.raises(ValueError, match=r"fill quantity must be positive$"):
        s.apply(SellFilled(Tier.STOP_LOSS, 0, 66_500, AT))
    filled_too_many = r"fill of 11 exceeds the 10 shares being sold for STOP_LOSS$"
    with pytest.raises(IllegalTransition, match=filled_too_many):
        s.apply(SellFilled(Tier.STOP_LOSS, 11, 66_500, AT))
    with pytest.raises(ValueError, match=r"an ended order reports a positive unfilled quantity$"):
        s.apply(SellEnded(Tier.STOP_LOSS, 0, AT))
    ended_too_many = r"11 unfilled exceeds the 10 shares being sold for STOP_LOSS$"
    with pytest.raises(IllegalTransition, match=ended_too_many):
        s.apply(SellEnded(Tier.STOP_LOSS, 11, AT))
    with pytest.raises(ValueError, match=r"held quantity cannot be negative$"):
        s.apply(HoldingSynced(-1, AT))
    s.apply(SellFilled(Tier.STOP_LOSS, 10, 66_500, AT))
    assert s.is_closed
    with pytest.raises(IllegalTransition, match="005930: price tick on a closed strategy"):
        s.apply(PriceTick(60_000, AT))
