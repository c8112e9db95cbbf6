"""Three-tier exit: tier prices and the state machine, with hand-worked numbers."""

from datetime import datetime

import pytest

from autotrade.domain.exits import (
    RESTING_TRANSITIONS,
    TRANSITIONS,
    DayEnd,
    ExitStrategy,
    HoldingSynced,
    IllegalTransition,
    PriceTick,
    RestingFilled,
    RestingNotPlaced,
    RestingPlaced,
    RestingReduced,
    RestingStatus,
    RestingStop,
    RestingTrigger,
    SellEnded,
    SellFilled,
    SellIntent,
    StrategyStatus,
    TierStatus,
    stop_limit_price,
    tier_prices,
)
from autotrade.domain.krx import KST, is_valid_tick
from autotrade.domain.models import Tier

AT = datetime(2026, 11, 25, 9, 30, tzinfo=KST)
S = StrategyStatus


def tick(s: ExitStrategy, price: int) -> list[SellIntent]:
    return s.apply(PriceTick(price, AT))


def fill(s: ExitStrategy, tier: Tier, qty: int, price: int) -> None:
    s.apply(SellFilled(tier, qty, price, AT))


def test_tier_prices_specification_example() -> None:
    """Entry 70,000: stop 70,000 x 0.95 = 66,500; preserve x 1.04 = 72,800; take-profit x 1.08 = 75,600.

    All three are already on the 100-won tick of their band, as in the specification's example.
    """
    p = tier_prices(70_000)
    assert (p.stop_loss, p.preserve, p.take_profit) == (66_500, 72_800, 75_600)


def test_tier_prices_round_up_to_tick() -> None:
    """Entry 51,300 (100-won band).

    stop 51,300 x 0.95 = 48,735 -> 50-won band, up to 48,750 (fires no lower than configured);
    preserve x 1.04 = 53,352 -> up to 53,400; take-profit x 1.08 = 55,404 -> up to 55,500.
    """
    p = tier_prices(51_300)
    assert (p.stop_loss, p.preserve, p.take_profit) == (48_750, 53_400, 55_500)
    assert all(is_valid_tick(x) for x in (p.stop_loss, p.preserve, p.take_profit))
    assert p.stop_loss >= 51_300 * 0.95
    assert p.preserve >= 51_300 * 1.04 and p.take_profit >= 51_300 * 1.08


def test_tier_prices_band_edge() -> None:
    """Entry 19,250: take-profit 19,250 x 1.08 = 20,790 is in the 50-won band -> 20,800.

    preserve x 1.04 = 20,020 -> 50-won band -> 20,050; stop x 0.95 = 18,287.5 -> 10-won band -> 18,290.
    """
    p = tier_prices(19_250)
    assert (p.stop_loss, p.preserve, p.take_profit) == (18_290, 20_050, 20_800)


def test_tier_prices_custom_rates_and_cheap_stock() -> None:
    """Entry 10 KRW: 9.5 would round up to 10 = entry, so the stop drops to 9; preserve 10.4 -> 11."""
    p = tier_prices(10)
    assert p.stop_loss == 9 and p.preserve == 11 and p.take_profit == 11
    q = tier_prices(100_000, stop_loss_rate=3.0, preserve_rate=5.0, take_profit_rate=10.0)
    assert (q.stop_loss, q.preserve, q.take_profit) == (97_000, 105_000, 110_000)


@pytest.mark.parametrize(
    "bad",
    [
        dict(entry_price=0),
        dict(entry_price=100, stop_loss_rate=0.0),
        dict(entry_price=100, preserve_rate=9.0, take_profit_rate=8.0),
    ],
)
def test_tier_prices_reject_bad_input(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        tier_prices(**bad)  # type: ignore[arg-type]


def test_scenario_stop_loss_sells_everything() -> None:
    """Scenario 1: 10 shares at 70,000; price falls to 66,500 -> sell all 10, other tiers cancelled."""
    s = ExitStrategy.arm("005930", 70_000, 10)
    assert tick(s, 67_000) == []
    [intent] = tick(s, 66_500)
    assert (intent.tier, intent.quantity, intent.trigger_price) == (Tier.STOP_LOSS, 10, 66_500)
    assert s.status is S.STOP_PENDING
    assert s.tiers[Tier.PRESERVE] is TierStatus.CANCELLED
    assert s.tiers[Tier.TAKE_PROFIT] is TierStatus.CANCELLED
    fill(s, Tier.STOP_LOSS, 10, 66_500)
    assert s.status is S.STOPPED and s.held == 0
    assert s.tiers[Tier.STOP_LOSS] is TierStatus.EXECUTED


def test_scenario_preserve_then_take_profit() -> None:
    """Scenarios 2 and 3: 10 shares at 70,000.

    72,800 -> preserve sells floor(10/2) = 5; stop now covers 5. 75,600 -> take-profit sells the other 5.
    """
    s = ExitStrategy.arm("005930", 70_000, 10)
    [p] = tick(s, 72_800)
    assert (p.tier, p.quantity) == (Tier.PRESERVE, 5)
    assert tick(s, 72_900) == []  # preserve already working: no second order
    fill(s, Tier.PRESERVE, 5, 72_800)
    assert s.status is S.PRESERVE_TRIGGERED and s.stop_quantity() == 5
    assert tick(s, 74_000) == []
    [t] = tick(s, 75_600)
    assert (t.tier, t.quantity) == (Tier.TAKE_PROFIT, 5)
    fill(s, Tier.TAKE_PROFIT, 5, 75_600)
    assert s.status is S.COMPLETED
    assert s.tiers == {
        Tier.STOP_LOSS: TierStatus.CANCELLED,
        Tier.PRESERVE: TierStatus.EXECUTED,
        Tier.TAKE_PROFIT: TierStatus.EXECUTED,
    }


def test_preserve_then_stop_sells_only_the_rest() -> None:
    """10 at 70,000: preserve sells 5 at 72,800; price falls back to 66,400 -> stop sells the remaining 5."""
    s = ExitStrategy.arm("005930", 70_000, 10)
    tick(s, 72_800)
    fill(s, Tier.PRESERVE, 5, 72_800)
    [stop] = tick(s, 66_400)
    assert (stop.tier, stop.quantity) == (Tier.STOP_LOSS, 5)
    fill(s, Tier.STOP_LOSS, 5, 66_400)
    assert s.status is S.STOPPED


def test_gap_below_stop_after_preserve() -> None:
    """After the preserve sold 5 of 10, the next day opens at 60,000 (below 66,500): stop sells all 5."""
    s = ExitStrategy.arm("005930", 70_000, 10)
    tick(s, 72_800)
    fill(s, Tier.PRESERVE, 5, 72_800)
    s.apply(DayEnd(AT))
    [stop] = tick(s, 60_000)
    assert (stop.tier, stop.quantity, stop.observed_price) == (Tier.STOP_LOSS, 5, 60_000)


def test_gap_above_take_profit_before_preserve() -> None:
    """10 at 70,000 opens at 80,000, above take-profit 75,600 before preserve: sell all 10, skip preserve."""
    s = ExitStrategy.arm("005930", 70_000, 10)
    [t] = tick(s, 80_000)
    assert (t.tier, t.quantity) == (Tier.TAKE_PROFIT, 10)
    assert s.tiers[Tier.PRESERVE] is TierStatus.SKIPPED
    fill(s, Tier.TAKE_PROFIT, 10, 80_000)
    assert s.status is S.COMPLETED


def test_gap_below_stop_before_anything() -> None:
    s = ExitStrategy.arm("005930", 70_000, 10)
    [stop] = tick(s, 50_000)
    assert (stop.tier, stop.quantity) == (Tier.STOP_LOSS, 10)


def test_single_share_skips_preserve() -> None:
    """Q = 1 cannot be halved: preserve SKIPPED; at 72,800 nothing sells; at 75,600 the share sells."""
    s = ExitStrategy.arm("005930", 70_000, 1)
    assert s.tiers[Tier.PRESERVE] is TierStatus.SKIPPED
    assert tick(s, 72_800) == []
    [t] = tick(s, 75_600)
    assert (t.tier, t.quantity) == (Tier.TAKE_PROFIT, 1)


def test_odd_quantity_preserve_sells_floor_half() -> None:
    """Q = 7: preserve sells floor(7/2) = 3, leaving 4 for the stop and take-profit."""
    s = ExitStrategy.arm("005930", 70_000, 7)
    [p] = tick(s, 72_800)
    assert p.quantity == 3
    fill(s, Tier.PRESERVE, 3, 72_800)
    [t] = tick(s, 75_600)
    assert t.quantity == 4


def test_partial_fills_and_unfilled_rest_resell() -> None:
    """Stop on 10 shares fills 4, then the order dies unfilled (6 left): the exit is committed, so the next
    tick re-sells 6 at any price (here 67,000, above the stop) as attempt 2."""
    s = ExitStrategy.arm("005930", 70_000, 10)
    tick(s, 66_000)
    fill(s, Tier.STOP_LOSS, 4, 66_000)
    assert s.status is S.STOP_PENDING and s.held == 6 and s.free == 0
    assert tick(s, 65_000) == []  # all 6 still being sold
    s.apply(SellEnded(Tier.STOP_LOSS, 6, AT))
    [again] = tick(s, 67_000)
    assert (again.tier, again.quantity, again.attempt) == (Tier.STOP_LOSS, 6, 2)
    fill(s, Tier.STOP_LOSS, 6, 67_000)
    assert s.status is S.STOPPED


def test_partial_preserve_then_day_end_rearms_rest_of_preserve() -> None:
    """Preserve of 5 fills 2 then the day ends: next day preserve still owes 3 and sells them at 72,800."""
    s = ExitStrategy.arm("005930", 70_000, 10)
    tick(s, 72_800)
    fill(s, Tier.PRESERVE, 2, 72_800)
    s.apply(DayEnd(AT))
    assert s.status is S.ACTIVE and s.free == 8
    [p] = tick(s, 73_000)
    assert (p.tier, p.quantity) == (Tier.PRESERVE, 3)
    fill(s, Tier.PRESERVE, 3, 73_000)
    assert s.status is S.PRESERVE_TRIGGERED and s.held == 5


def test_stop_during_working_preserve_covers_free_shares() -> None:
    """Preserve for 5 is working when the price crashes: the stop sells the other 5 right away."""
    s = ExitStrategy.arm("005930", 70_000, 10)
    tick(s, 72_800)
    [stop] = tick(s, 66_000)
    assert (stop.tier, stop.quantity) == (Tier.STOP_LOSS, 5)
    fill(s, Tier.PRESERVE, 5, 72_800)
    fill(s, Tier.STOP_LOSS, 5, 66_000)
    assert s.status is S.STOPPED


def test_overfill_and_illegal_moves_raise() -> None:
    s = ExitStrategy.arm("005930", 70_000, 10)
    with pytest.raises(IllegalTransition):
        fill(s, Tier.STOP_LOSS, 1, 66_000)  # nothing is being sold
    tick(s, 66_000)
    with pytest.raises(IllegalTransition):
        fill(s, Tier.STOP_LOSS, 11, 66_000)
    fill(s, Tier.STOP_LOSS, 10, 66_000)
    with pytest.raises(IllegalTransition):
        tick(s, 60_000)  # closed strategies are not watched


def test_holding_sync_sold_by_hand() -> None:
    """The user sold 4 of 10 by hand: the strategy follows the broker (6 held); all sold -> closed."""
    s = ExitStrategy.arm("005930", 70_000, 10)
    s.apply(HoldingSynced(6, AT))
    assert s.held == 6 and s.status is S.ACTIVE
    s.apply(HoldingSynced(12, AT))  # bought more by hand: not ours to manage
    assert s.held == 6
    s.apply(HoldingSynced(0, AT))
    assert s.status is S.CLOSED_EXTERNALLY


def test_transition_table_has_no_exit_from_terminal_states() -> None:
    terminal = {S.STOPPED, S.COMPLETED, S.CLOSED_EXTERNALLY}
    assert not [k for k in TRANSITIONS if k[0] in terminal]


def test_events_need_aware_times() -> None:
    s = ExitStrategy.arm("005930", 70_000, 10)
    with pytest.raises(ValueError):
        s.apply(PriceTick(70_000, datetime(2026, 11, 25, 9, 30)))


# --- the resting stop (a stop-limit sell at the broker) ---------------------------------------------------


def test_stop_limit_price_steps_down_valid_ticks() -> None:
    """66,500 (100-won band) 5 ticks down: 66,400, 66,300, 66,200, 66,100, 66,000. 50,100 3 ticks down:
    50,000, then the 50-won band below 50,000: 49,950, 49,900. 2,001 would not be a tick; 2,005 two ticks
    down: 2,000, then the 1-won band: 1,999. 0 ticks: the trigger itself."""
    assert stop_limit_price(66_500, 5) == 66_000
    assert stop_limit_price(50_100, 3) == 49_900
    assert stop_limit_price(2_005, 2) == 1_999
    assert stop_limit_price(66_500, 0) == 66_500
    assert is_valid_tick(stop_limit_price(123_456 // 100 * 100, 7))


def resting(qty: int = 10) -> ExitStrategy:
    """Entry 70,000: stop 66,500, preserve 72,800, take-profit 75,600; a stop resting for every share."""
    s = ExitStrategy.arm("005930", 70_000, qty)
    order = s.rest_stop(5, AT)
    assert order == RestingStop(qty, 66_500, 66_000)
    assert s.resting_status is RestingStatus.PLACING
    assert s.rest_stop(5, AT) is None  # one at a time
    s.apply(RestingPlaced(qty, AT))
    assert (s.resting_status, s.resting) == (RestingStatus.RESTING, qty)
    return s


def test_resting_stop_fill_closes_the_position_with_no_watch() -> None:
    """The broker's stop sells all 10 while nothing watches: STOPPED, nothing rests, nothing to sell."""
    s = resting()
    s.apply(RestingFilled(10, 66_400, AT))
    assert (s.status, s.held, s.resting, s.resting_status) == (S.STOPPED, 0, 0, RestingStatus.NONE)
    assert s.tiers[Tier.STOP_LOSS] is TierStatus.EXECUTED


def test_preserve_shrinks_the_resting_stop_first_then_the_stop_sells_the_rest() -> None:
    """Q = 10: preserve sells 5. Before it goes, 5 of the 10 resting shares are cancelled (the 5 left are
    still covered); the broker confirms 5 rest. Preserve fills 5; the stop later sells exactly those 5."""
    s = resting()
    [intent] = tick(s, 72_800)
    assert (intent.tier, intent.quantity) == (Tier.PRESERVE, 5)
    assert s.reduce_resting(AT) == 5
    assert s.resting_status is RestingStatus.REDUCING
    s.apply(RestingReduced(5, AT))
    assert (s.resting_status, s.resting) == (RestingStatus.RESTING, 5)
    assert s.reduce_resting(AT) is None  # already within the target
    fill(s, Tier.PRESERVE, 5, 72_800)
    assert s.status is S.PRESERVE_TRIGGERED and s.resting_target() == 5
    with pytest.raises(IllegalTransition):
        s.apply(RestingFilled(6, 66_400, AT))  # only 5 rest
    s.apply(RestingFilled(5, 66_400, AT))
    assert (s.status, s.held) == (S.STOPPED, 0)


def test_take_profit_cancels_the_whole_resting_stop_and_a_racing_stop_fill_is_not_sold_twice() -> None:
    """Take-profit fires for all 10 while 10 rest: everything is to be cancelled (0 = all). The broker's stop
    sells 4 before the cancel lands: the take-profit's 10 in flight are trimmed to the 6 still held, and
    the stop is committed (the rest sells at market); if it sells the other 6 too, nothing is left."""
    s = resting()
    [intent] = tick(s, 75_600)
    assert (intent.tier, intent.quantity) == (Tier.TAKE_PROFIT, 10)
    assert s.reduce_resting(AT) == 0
    s.apply(RestingFilled(4, 66_400, AT))
    assert (s.held, s.in_flight[Tier.TAKE_PROFIT], s.status) == (6, 6, S.STOP_PENDING)
    s.apply(RestingFilled(6, 66_400, AT))
    assert (s.status, s.held, sum(s.in_flight.values())) == (S.STOPPED, 0, 0)


def test_partial_resting_fill_commits_the_stop_and_the_watch_sells_the_rest_at_market() -> None:
    """The price gaps below the limit after 4 of 10 sold at the broker: STOP_PENDING; the next tick (any
    price) fires a market stop for the 6 free shares, and the 6 still resting are all to be cancelled."""
    s = resting()
    s.apply(RestingFilled(4, 66_000, AT))
    assert (s.status, s.resting) == (S.STOP_PENDING, 6)
    [intent] = tick(s, 65_000)
    assert (intent.tier, intent.quantity) == (Tier.STOP_LOSS, 6)
    assert s.reduce_resting(AT) == 0
    s.apply(RestingReduced(0, AT))
    assert (s.resting_status, s.resting) == (RestingStatus.NONE, 0)


def test_resting_stop_ends_with_the_day_and_is_placed_again() -> None:
    """Day orders: at the close the resting stop is gone (NONE); the next session rests it again for all."""
    s = resting()
    s.apply(DayEnd(AT))
    assert (s.resting_status, s.resting) == (RestingStatus.NONE, 0)
    assert s.rest_stop(5, AT) == RestingStop(10, 66_500, 66_000)


def test_resting_moves_outside_the_table_raise() -> None:
    s = ExitStrategy.arm("005930", 70_000, 10)
    with pytest.raises(IllegalTransition):
        s.apply(RestingPlaced(10, AT))  # nothing was being placed
    with pytest.raises(IllegalTransition):
        s.apply(RestingReduced(0, AT))
    assert s.reduce_resting(AT) is None  # nothing rests
    s.rest_stop(5, AT)
    s.apply(RestingNotPlaced(AT))
    assert s.resting_status is RestingStatus.NONE
    # Nothing resting cannot fill; a stop already resting is not placed twice.
    assert (RestingStatus.NONE, RestingTrigger.FILL) not in RESTING_TRANSITIONS
    assert (RestingStatus.RESTING, RestingTrigger.PLACE) not in RESTING_TRANSITIONS
