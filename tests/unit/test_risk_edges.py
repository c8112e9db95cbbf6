"""Buy sizing at its edges: every skip carries its row and its reason's detail, a skip never ends the scan,
and each limit is tested at the won where it binds. Amounts worked out by hand (fee 0.015 %, truncated)."""

from __future__ import annotations

import pytest

from autotrade.domain.models import LimitKind, ScanRow, SkipReason
from autotrade.domain.risk import AccountState, PlannedBuy, RiskLimits, SkippedSignal, plan_buys


def row(code: str, score: float, price: int, name: str = "") -> ScanRow:
    return ScanRow(code, name or f"n{code}", score, price)


def test_each_skip_is_recorded_whole_and_the_scan_goes_on() -> None:
    """Rows are taken by score (then code); after every kind of skip the next row is still looked at,
    and the last row (score exactly the 7.0 minimum, price 1 won, the smallest valid) is bought."""
    scan = [
        row("000001", 9.9, 10_055),  # not a tick of the 10-won band: invalid price
        row("000002", 9.8, 50_000),  # held
        row("000003", 9.7, 50_000),  # bought today already
        row("000002", 9.6, 50_000),  # the same code again: duplicate (checked before holdings)
        row("000004", 9.5, 50_000),  # bought: 1,000,000 // 50,000 = 20 shares
        row("000005", 6.9, 50_000),  # below 7.0
        row("000006", 7.0, 1),  # exactly 7.0, one won: per-stock 1,000,000 shares of 1 won
    ]
    held, today = frozenset({"000002"}), frozenset({"000003"})
    account = AccountState(cash=50_000_000, held_codes=held, bought_today=today)
    plan = plan_buys(scan, RiskLimits(), account)
    assert plan.buys == (
        PlannedBuy("000004", "n000004", 9.5, 50_000, 20, LimitKind.PER_STOCK),
        PlannedBuy("000006", "n000006", 7.0, 1, 1_000_000, LimitKind.PER_STOCK),
    )
    assert plan.skipped == (
        SkippedSignal("000001", "n000001", 9.9, 10_055, SkipReason.INVALID_PRICE,
                      "price 10055 is not a valid KRX tick"),
        SkippedSignal("000002", "n000002", 9.8, 50_000, SkipReason.ALREADY_HELD, ""),
        SkippedSignal("000003", "n000003", 9.7, 50_000, SkipReason.BOUGHT_TODAY, ""),
        SkippedSignal("000002", "n000002", 9.6, 50_000, SkipReason.DUPLICATE_IN_SCAN, ""),
        SkippedSignal("000005", "n000005", 6.9, 50_000, SkipReason.LOW_SCORE, "score 6.9 < 7.0"),
    )  # fmt: skip


def test_stock_count_and_zero_quantity_details() -> None:
    limits = RiskLimits(max_stock_count=2)
    account = AccountState(cash=50_000_000, held_codes=frozenset({"000009"}))
    plan = plan_buys([row("000001", 9.0, 5_000_000), row("000002", 8.0, 1_000), row("000003", 7.5, 1_000)],
                     limits, account)  # fmt: skip
    assert [b.code for b in plan.buys] == ["000002"]
    assert plan.skipped == (
        SkippedSignal("000001", "n000001", 9.0, 5_000_000, SkipReason.PRICE_ABOVE_PER_STOCK_LIMIT,
                      "budget 1000000 KRW < price 5000000 KRW"),
        SkippedSignal("000003", "n000003", 7.5, 1_000, SkipReason.MAX_STOCK_COUNT, "2 of 2 slots used"),
    )  # fmt: skip


def test_an_exhausted_day_or_a_negative_cash_buys_nothing_even_at_one_won() -> None:
    limits = RiskLimits()
    over = AccountState(cash=50_000_000, spent_today=10_000_001)  # past the 10,000,000 daily budget
    plan = plan_buys([row("000001", 9.0, 1)], limits, over)
    assert plan.buys == () and plan.skipped[0].reason is SkipReason.DAILY_BUDGET_EXHAUSTED
    broke = AccountState(cash=-5)
    plan = plan_buys([row("000001", 9.0, 1)], limits, broke)
    assert plan.buys == () and plan.skipped[0].reason is SkipReason.INSUFFICIENT_CASH


def test_the_fee_decides_the_last_share() -> None:
    # One share of 100,000 costs 100,015 with the fee: 100,000 of cash buys none, 100,015 buys it.
    short = plan_buys([row("000001", 9.0, 100_000)], RiskLimits(), AccountState(cash=100_000))
    assert short.buys == () and short.skipped[0].reason is SkipReason.INSUFFICIENT_CASH
    exact = plan_buys([row("000001", 9.0, 100_000)], RiskLimits(), AccountState(cash=100_015))
    assert exact.buys == (PlannedBuy("000001", "n000001", 9.0, 100_000, 1, LimitKind.CASH),)


def test_which_daily_limit_binds() -> None:
    # Both daily limits 10,000,000 and 9,500,000 spent: 500,000 left, below the 1,000,000 per stock. With
    # equal limits the system-wide total is named; a lower user limit is named as the user's.
    account = AccountState(cash=50_000_000, spent_today=9_500_000)
    same = plan_buys([row("000001", 9.0, 10_000)], RiskLimits(), account)
    assert same.buys[0].bound_by is LimitKind.DAILY_TOTAL and same.buys[0].quantity == 50
    own = plan_buys([row("000001", 9.0, 10_000)], RiskLimits(daily_limit=9_900_000), account)
    assert own.buys[0].bound_by is LimitKind.USER_DAILY_LIMIT and own.buys[0].quantity == 40


def test_limits_must_be_positive() -> None:
    for name in ("max_daily_investment", "daily_limit", "max_stock_count", "max_per_stock"):
        with pytest.raises(ValueError, match=rf"{name} must be positive$"):
            RiskLimits(**{name: 0})


def test_skips_after_a_closed_stock_or_a_full_book_are_still_recorded() -> None:
    """A stock closed today (no re-buy allowed) does not end the scan: the next is bought. Once the slots
    are full, a lower row that is held is still recorded as held (the count does not stop the scan)."""
    limits = RiskLimits(max_stock_count=1, allow_rebuy_same_day=False)
    closed, held = frozenset({"000001"}), frozenset({"000009"})
    account = AccountState(cash=50_000_000, closed_today=closed, held_codes=held)
    plan = plan_buys([row("000001", 9.0, 10_000), row("000002", 8.5, 10_000), row("000009", 8.0, 10_000)],
                     RiskLimits(allow_rebuy_same_day=False), account)  # fmt: skip
    assert [b.code for b in plan.buys] == ["000002"]
    assert [(s.code, s.reason) for s in plan.skipped] == [
        ("000001", SkipReason.CLOSED_TODAY), ("000009", SkipReason.ALREADY_HELD)
    ]
    full = plan_buys([row("000002", 8.5, 10_000), row("000003", 8.4, 10_000), row("000009", 8.0, 10_000)],
                     limits, account)  # fmt: skip
    assert full.buys == ()
    assert [(s.code, s.reason) for s in full.skipped] == [
        ("000002", SkipReason.MAX_STOCK_COUNT), ("000003", SkipReason.MAX_STOCK_COUNT),
        ("000009", SkipReason.ALREADY_HELD),
    ]
