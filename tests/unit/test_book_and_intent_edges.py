"""Edges of the exit book, of arming a strategy, of the resting stop's limit and of the order intent's
bookkeeping; expected values worked out by hand in the comments."""

from __future__ import annotations

from datetime import datetime

import pytest

from autotrade.domain.exit_book import ExitBook
from autotrade.domain.exits import ExitStrategy, TierPrices, TierStatus, stop_limit_price
from autotrade.domain.krx import KST
from autotrade.domain.models import Side, Tier
from autotrade.domain.orders import IllegalIntentTransition, IntentEvent, IntentStatus, OrderIntent

AT = datetime(2026, 11, 25, 10, 0, tzinfo=KST)


def test_a_stop_fires_at_exactly_its_price() -> None:
    book: ExitBook[str] = ExitBook()
    book.add("a", ExitStrategy.arm("005930", 70_000, 10))  # stop 70,000 x 0.95 = 66,500
    assert book.on_price("005930", 66_600, AT) == []
    [(key, intent)] = book.on_price("005930", 66_500, AT)
    assert (key, intent.tier, intent.quantity) == ("a", Tier.STOP_LOSS, 10)
    with pytest.raises(KeyError, match=r"'a' is already in the book.$"):
        book.add("a", ExitStrategy.arm("005930", 70_000, 10))


def test_intents_of_one_tick_come_in_the_order_of_the_keys_repr() -> None:
    # Keys 9 and 10 fire on the same tick: by repr, "10" sorts before "9" (the order is fixed whatever the
    # key type, so replays give the same sequence).
    book: ExitBook[int] = ExitBook()
    book.add(9, ExitStrategy.arm("005930", 70_000, 2))
    book.add(10, ExitStrategy.arm("005930", 70_000, 2))
    assert [k for k, _ in book.on_price("005930", 60_000, AT)] == [10, 9]


def test_arming_uses_every_rate_and_skips_preserve_for_one_share() -> None:
    # Entry 50,000 with stop 3 %, preserve 5 %, take-profit 12 %: 48,500, 52,500, 56,000 (100-won ticks).
    s = ExitStrategy.arm("005930", 50_000, 2, stop_loss_rate=3.0, preserve_rate=5.0, take_profit_rate=12.0)
    assert s.prices == TierPrices(stop_loss=48_500, preserve=52_500, take_profit=56_000)
    assert (s.entry_price, s.quantity, s.held, s.preserve_target) == (50_000, 2, 2, 1)
    assert s.tiers[Tier.PRESERVE] is TierStatus.ACTIVE  # half of 2 is 1 share to preserve
    one = ExitStrategy.arm("005930", 50_000, 1)
    assert one.preserve_target == 0 and one.tiers[Tier.PRESERVE] is TierStatus.SKIPPED
    for bad in (0, -1):
        with pytest.raises(ValueError, match=r"quantity must be positive$"):
            ExitStrategy.arm("005930", 50_000, bad)


def test_the_resting_stops_limit_steps_down_valid_prices() -> None:
    # Two ticks under 2,000 cross into the 1-won band: 1,999 then 1,998. Under 50,000: 49,950, 49,900.
    assert stop_limit_price(2_000, 2) == 1_998
    assert stop_limit_price(50_000, 2) == 49_900
    assert stop_limit_price(66_500, 0) == 66_500
    # It never goes under 1 won: from 2, five ticks down stop at 1; a trigger of 1 stays 1.
    assert stop_limit_price(2, 5) == 1
    assert stop_limit_price(1, 3) == 1
    for trigger, ticks in ((0, 1), (-1, 0), (100, -1)):
        with pytest.raises(ValueError, match=r"trigger must be positive and ticks_below non-negative$"):
            stop_limit_price(trigger, ticks)


def test_intent_fill_counts_may_repeat_but_not_go_down_or_past_the_order() -> None:
    o = OrderIntent(key="k", side=Side.BUY, code="005930", quantity=10, price=None)
    o.apply(IntentEvent.SEND)
    o.apply(IntentEvent.ACK, order_no="0000001")
    o.apply(IntentEvent.FILL, filled_total=4)
    o.apply(IntentEvent.FILL, filled_total=4)  # the same report twice is not a step back
    assert (o.status, o.filled, o.remaining) == (IntentStatus.PARTIALLY_FILLED, 4, 6)
    assert o.events == [IntentEvent.SEND, IntentEvent.ACK, IntentEvent.FILL, IntentEvent.FILL]
    with pytest.raises(IllegalIntentTransition, match=r"filled quantity cannot go down$"):
        o.apply(IntentEvent.FILL, filled_total=3)
    with pytest.raises(IllegalIntentTransition, match=r"filled 11 exceeds ordered 10$"):
        o.apply(IntentEvent.FILL, filled_total=11)
    with pytest.raises(IllegalIntentTransition, match=r"order number mismatch: 0000002 != 0000001$"):
        o.apply(IntentEvent.FILL, order_no="0000002", filled_total=5)
    with pytest.raises(IllegalIntentTransition, match="SEND is not allowed for an intent in status"):
        o.apply(IntentEvent.SEND)
