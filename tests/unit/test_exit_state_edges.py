"""Edges of the three-tier exit and its resting stop that the scenarios do not reach: exact quantities left in
flight after a fill of the broker's stop or a holding sync, the history each event leaves, the boundaries of
each guard and the words of each refusal. Entry 70,000 throughout: stop 66,500, preserve 72,800,
take-profit 75,600; numbers worked by hand."""

import re

import pytest

from autotrade.domain.exit_book import upper_level
from autotrade.domain.exits import (
    DayEnd,
    ExitStrategy,
    HoldingSynced,
    IllegalTransition,
    PriceTick,
    RestingEnded,
    RestingFilled,
    RestingPlaced,
    RestingReduced,
    RestingStatus,
    RestingStop,
    SellEnded,
    SellFilled,
    SellIntent,
    StrategyStatus,
    TierStatus,
)
from autotrade.domain.models import Tier

from .test_exits import AT, resting

S = StrategyStatus
CODE = "005930"


def arm(qty: int = 10) -> ExitStrategy:
    return ExitStrategy.arm(CODE, 70_000, qty)


def tick(s: ExitStrategy, price: int) -> list[SellIntent]:
    return s.apply(PriceTick(price, AT))


def flying(s: ExitStrategy) -> dict[Tier, int]:
    return {t: n for t, n in s.in_flight.items() if n}


def exactly(text: str) -> str:
    return "^" + re.escape(text) + "$"


# --- holding sync -------------------------------------------------------------------------------------


def test_a_hand_sale_beside_a_working_preserve_leaves_the_rest_covered_by_the_stop() -> None:
    """Q = 10, preserve sells 5; the user sells 2 by hand (the broker holds 8). The 5 in flight fit in the 8
    held: nothing is trimmed, 3 shares are free, and a tick at the stop sells exactly those 3."""
    s = arm()
    tick(s, 72_800)
    sync = HoldingSynced(8, AT)
    s.apply(sync)
    assert (s.held, flying(s), s.free) == (8, {Tier.PRESERVE: 5}, 3)
    assert s.history[-1] == (sync, S.PRESERVE_PENDING)
    [stop] = tick(s, 66_500)
    assert (stop.tier, stop.quantity) == (Tier.STOP_LOSS, 3)


def test_a_sync_to_what_is_held_changes_nothing() -> None:
    s = arm()
    tick(s, 72_800)
    before = len(s.history)
    s.apply(HoldingSynced(10, AT))
    assert (len(s.history), s.held, flying(s)) == (before, 10, {Tier.PRESERVE: 5})


def test_a_sync_trims_the_preserve_first_then_the_stop_and_the_resting_count() -> None:
    """10 held, 10 resting, preserve 5 and stop 5 in flight; the broker holds 3. 7 are gone: the preserve's 5
    first, then 2 of the stop's 5 (3 left); at most 3 can still rest."""
    s = resting()
    tick(s, 72_800)
    tick(s, 66_500)
    assert flying(s) == {Tier.PRESERVE: 5, Tier.STOP_LOSS: 5}
    sync = HoldingSynced(3, AT)
    s.apply(sync)
    assert (s.held, s.resting, flying(s)) == (3, 3, {Tier.STOP_LOSS: 3})
    assert s.history[-1] == (sync, S.STOP_PENDING)


# --- the broker's resting stop ------------------------------------------------------------------------


def test_a_resting_fill_takes_shares_from_the_take_profit_then_the_preserve_then_the_stop() -> None:
    """10 resting; preserve 5 and stop 5 in flight (the cancels not yet asked). The broker's stop sells 7: 3
    held, 3 still rest. In flight 10 for 3 held: the preserve's 5 go, then 2 of the stop's (3 left)."""
    s = resting()
    tick(s, 72_800)
    tick(s, 66_500)
    filled = RestingFilled(7, 66_400, AT)
    s.apply(filled)
    assert (s.held, s.resting, s.resting_status) == (3, 3, RestingStatus.RESTING)
    assert flying(s) == {Tier.STOP_LOSS: 3}
    assert s.history[-1] == (filled, S.STOP_PENDING)


def test_a_resting_fill_within_what_is_free_trims_nothing_and_cancels_the_idle_tiers() -> None:
    """Preserve sells 5 and 5 rest (5 cancelled). A resting fill above what rests is refused; a fill of 2
    leaves 8 held, 3 resting, the preserve's 5 still in flight; the take-profit (idle) is cancelled, the
    preserve (working) is not, the stop is triggered and committed."""
    s = resting()
    tick(s, 72_800)
    assert s.reduce_resting(AT) == 5
    s.apply(RestingReduced(5, AT))
    with pytest.raises(
        IllegalTransition, match=exactly(f"{CODE}: resting stop fill of 6 exceeds the 5 shares resting")
    ):
        s.apply(RestingFilled(6, 66_400, AT))  # 6 are held, but only 5 rest
    s.apply(RestingFilled(2, 66_400, AT))
    assert (s.held, s.resting, flying(s)) == (8, 3, {Tier.PRESERVE: 5})
    assert s.tiers == {
        Tier.STOP_LOSS: TierStatus.TRIGGERED,
        Tier.PRESERVE: TierStatus.TRIGGERED,
        Tier.TAKE_PROFIT: TierStatus.CANCELLED,
    }
    assert s.status is S.STOP_PENDING


def test_a_fill_before_the_acceptance_counts_against_what_is_held() -> None:
    """The stop is being placed for 10 (nothing confirmed rests): a fill of 11 is refused (10 held); a fill
    of 3 is taken (7 held), and the stop is still being placed."""
    s = arm()
    assert s.rest_stop(5, AT) == RestingStop(10, 66_500, 66_000)
    with pytest.raises(IllegalTransition):
        s.apply(RestingFilled(11, 66_400, AT))
    s.apply(RestingFilled(3, 66_400, AT))
    assert (s.held, s.resting, s.resting_status, s.status) == (7, 0, RestingStatus.PLACING, S.STOP_PENDING)


def test_resting_quantities_are_positive_and_refusals_say_what_and_why() -> None:
    s = arm()
    with pytest.raises(
        IllegalTransition, match=exactly(f"{CODE}: resting stop PLACED is not allowed in status NONE")
    ):
        s.apply(RestingPlaced(1, AT))
    s.rest_stop(5, AT)
    with pytest.raises(ValueError, match=exactly("a resting stop holds a positive quantity")):
        s.apply(RestingPlaced(0, AT))
    s.apply(RestingPlaced(1, AT))  # one share is a quantity
    assert (s.resting_status, s.resting) == (RestingStatus.RESTING, 1)
    with pytest.raises(ValueError, match=exactly("fill quantity must be positive")):
        s.apply(RestingFilled(0, 66_400, AT))
    s.apply(RestingFilled(1, 66_400, AT))
    assert (s.held, s.resting, s.resting_status) == (9, 0, RestingStatus.NONE)


def test_a_reduce_answered_with_everything_still_resting_and_a_grown_count_refused() -> None:
    """Preserve fires (5 to cancel); the broker answers that all 10 still rest (the cancel missed): back to
    RESTING with 10. Asked again, an answer of 11 cannot be."""
    s = resting()
    tick(s, 72_800)
    s.reduce_resting(AT)
    s.apply(RestingReduced(10, AT))
    assert (s.resting_status, s.resting) == (RestingStatus.RESTING, 10)
    s.reduce_resting(AT)
    with pytest.raises(IllegalTransition, match=exactly(f"{CODE}: 10 resting cannot become 11")):
        s.apply(RestingReduced(11, AT))


def test_a_resting_stop_cancelled_in_full_rests_nothing() -> None:
    s = resting()
    s.apply(RestingEnded(AT))
    assert (s.resting_status, s.resting, s.status) == (RestingStatus.NONE, 0, S.ACTIVE)


def test_a_resting_stop_that_sells_out_closes_with_its_fill_in_the_history() -> None:
    s = resting()
    assert s.stop_quantity() == 10
    filled = RestingFilled(10, 66_400, AT)
    s.apply(filled)
    assert s.history[-1] == (filled, S.STOPPED)
    assert s.stop_quantity() == 0
    with pytest.raises(
        IllegalTransition, match=exactly(f"{CODE}: resting stop fill on a closed strategy (STOPPED)")
    ):
        s.apply(RestingFilled(1, 66_400, AT))
    with pytest.raises(IllegalTransition, match=exactly(f"{CODE}: DAY_END is not allowed in status STOPPED")):
        s.apply(DayEnd(AT))


def test_a_single_share_rests_a_stop_for_one() -> None:
    assert arm(1).rest_stop(5, AT) == RestingStop(1, 66_500, 66_000)


def test_a_committed_stop_rests_nothing() -> None:
    """The market stop for 10 died unfilled: STOP_PENDING with 10 free. The watch sells them at market on
    the next tick, so no resting stop is placed for them."""
    s = arm()
    tick(s, 66_500)
    s.apply(SellEnded(Tier.STOP_LOSS, 10, AT))
    assert (s.status, s.free) == (S.STOP_PENDING, 10)
    assert s.resting_target() == 0
    assert s.rest_stop(5, AT) is None


def test_nothing_free_rests_nothing() -> None:
    """Preserve sells 5 of 10, and the broker then holds only those 5: every held share is on its way out."""
    s = arm()
    tick(s, 72_800)
    s.apply(HoldingSynced(5, AT))
    assert (s.status, s.free) == (S.PRESERVE_PENDING, 0)
    assert s.resting_target() == 0
    assert s.rest_stop(5, AT) is None


# --- ticks, fills, ends -------------------------------------------------------------------------------


def test_a_zero_price_is_no_trade_and_fires_nothing() -> None:
    s = arm()
    assert tick(s, 0) == []
    assert (s.status, s.history) == (S.ACTIVE, [])


def test_two_shares_preserve_one_and_each_fill_is_in_the_history() -> None:
    """Q = 2: preserve sells 1 (floor of half); its fill ends the preserve; take-profit sells the last."""
    s = arm(2)
    assert tick(s, 72_800) == [SellIntent(Tier.PRESERVE, 1, 72_800, 72_800, 1)]
    first = SellFilled(Tier.PRESERVE, 1, 72_800, AT)
    s.apply(first)
    assert s.history[-1] == (first, S.PRESERVE_TRIGGERED)
    assert tick(s, 75_600) == [SellIntent(Tier.TAKE_PROFIT, 1, 75_600, 75_600, 1)]
    last = SellFilled(Tier.TAKE_PROFIT, 1, 75_700, AT)
    s.apply(last)
    assert s.history[-1] == (last, S.COMPLETED)


def test_a_preserve_partly_ended_refires_only_what_is_owed() -> None:
    """Preserve sells 5; 2 of them end unfilled (3 still working): the next preserve tick sells 2, not 5,
    and 5 are in flight again."""
    s = arm()
    tick(s, 72_800)
    s.apply(SellEnded(Tier.PRESERVE, 2, AT))
    assert (s.status, s.tiers[Tier.PRESERVE], flying(s)) == (S.ACTIVE, TierStatus.ACTIVE, {Tier.PRESERVE: 3})
    assert tick(s, 72_800) == [SellIntent(Tier.PRESERVE, 2, 72_800, 72_800, 2)]
    assert flying(s) == {Tier.PRESERVE: 5}


def test_a_preserve_partly_sold_is_not_fired_past_what_is_owed() -> None:
    """Preserve sells 5: 2 fill, 3 end. 3 are owed: one tick sells them; the next tick owes nothing more.
    While the 3 work the book's next level up is the take-profit."""
    s = arm()
    tick(s, 72_800)
    s.apply(SellFilled(Tier.PRESERVE, 2, 72_800, AT))
    assert upper_level(s) == 75_600  # 3 still in flight cover the 3 owed
    s.apply(SellEnded(Tier.PRESERVE, 3, AT))
    assert upper_level(s) == 72_800
    assert tick(s, 72_800) == [SellIntent(Tier.PRESERVE, 3, 72_800, 72_800, 2)]
    assert tick(s, 72_800) == []
    assert upper_level(s) == 75_600


def test_a_stop_order_ending_leaves_a_working_preserve_triggered() -> None:
    s = arm()
    tick(s, 72_800)
    tick(s, 66_500)
    s.apply(SellEnded(Tier.STOP_LOSS, 5, AT))
    assert s.tiers[Tier.PRESERVE] is TierStatus.TRIGGERED
    assert (s.status, flying(s)) == (S.STOP_PENDING, {Tier.PRESERVE: 5})


def test_a_preserve_ending_after_a_take_profit_stays_skipped() -> None:
    """Preserve sells 5, 2 end (3 still working, the tier active again); take-profit fires for the 7 free and
    skips the preserve; the 3 then end: the preserve stays SKIPPED."""
    s = arm()
    tick(s, 72_800)
    s.apply(SellEnded(Tier.PRESERVE, 2, AT))
    assert tick(s, 75_600) == [SellIntent(Tier.TAKE_PROFIT, 7, 75_600, 75_600, 1)]
    s.apply(SellEnded(Tier.PRESERVE, 3, AT))
    assert s.tiers[Tier.PRESERVE] is TierStatus.SKIPPED
    assert s.status is S.TAKE_PROFIT_PENDING
