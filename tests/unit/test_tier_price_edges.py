"""Tier prices at the edges of their inputs: the cheapest entry, every rate at its bounds, and a large rate
that shows the percent is taken of 100. Values worked out by hand."""

from __future__ import annotations

import pytest

from autotrade.domain.exits import TierPrices, tier_prices


def test_the_cheapest_entry_keeps_the_stop_at_one_won() -> None:
    # Entry 1: 1 x 0.95 rounds up to 1, not below the entry, and there is no tick under 1: the stop stays
    # 1. Preserve 1.04 and take-profit 1.08 round up to 2. Entry 3: 2.85 rounds up to 3 = the entry, so
    # the stop drops to the tick below, 2.
    assert tier_prices(1) == TierPrices(stop_loss=1, preserve=2, take_profit=2)
    assert tier_prices(3).stop_loss == 2
    for bad in (0, -1):
        with pytest.raises(ValueError, match=rf"entry price must be positive, got {bad}$"):
            tier_prices(bad)


def test_each_rate_at_its_bounds() -> None:
    # Entry 100,000 (100-won ticks): stop 1 % is 99,000, 99.9 % is 100; preserve and take-profit 1 % are
    # both 101,000 (equal rates are allowed).
    assert tier_prices(100_000, stop_loss_rate=1.0).stop_loss == 99_000
    assert tier_prices(100_000, stop_loss_rate=99.9).stop_loss == 100
    equal = tier_prices(100_000, preserve_rate=1.0, take_profit_rate=1.0)
    assert equal == TierPrices(95_000, 101_000, 101_000)
    # 50 % and 60 %: 150,000 and 160,000 (a percent of 100: of 101 it would be 149,600).
    large = tier_prices(100_000, preserve_rate=50.0, take_profit_rate=60.0)
    assert large == TierPrices(95_000, 150_000, 160_000)
    for stop in (0.0, 100.0, 101.0, -1.0):
        with pytest.raises(ValueError, match=r"stop_loss_rate must be between 0 and 100 percent$"):
            tier_prices(100_000, stop_loss_rate=stop)
    for preserve, take in ((0.0, 8.0), (4.0, 0.0), (-1.0, 8.0)):
        with pytest.raises(ValueError, match=r"preserve_rate and take_profit_rate must be positive$"):
            tier_prices(100_000, preserve_rate=preserve, take_profit_rate=take)
    with pytest.raises(ValueError, match=r"take_profit_rate must not be below preserve_rate$"):
        tier_prices(100_000, preserve_rate=8.0, take_profit_rate=7.9)
