"""Signals and per-user risk: every limit binding in turn, with hand-worked numbers.

Fees are 0.015% on buys; the cash check includes them.
"""

import pytest

from autotrade.domain.models import LimitKind, ScanRow, SkipReason
from autotrade.domain.risk import AccountState, RiskLimits, plan_buys

RICH = AccountState(cash=100_000_000)


def row(code: str, score: float, price: int, name: str = "") -> ScanRow:
    return ScanRow(code=code, name=name or code, score=score, price=price)


def test_score_filter_and_order() -> None:
    """Rows below 7.0 are skipped with LOW_SCORE; the rest are bought best score first."""
    scan = [row("000001", 7.5, 10_000), row("000002", 6.9, 10_000), row("000003", 9.1, 10_000)]
    plan = plan_buys(scan, RiskLimits(), RICH)
    assert [b.code for b in plan.buys] == ["000003", "000001"]
    assert [(s.code, s.reason) for s in plan.skipped] == [("000002", SkipReason.LOW_SCORE)]


def test_per_stock_limit_binds() -> None:
    """1,000,000 per stock at 70,000: floor(1,000,000 / 70,000) = 14 shares = 980,000 KRW."""
    plan = plan_buys([row("005930", 8.5, 70_000)], RiskLimits(), RICH)
    [b] = plan.buys
    assert (b.quantity, b.amount, b.bound_by) == (14, 980_000, LimitKind.PER_STOCK)


def test_daily_total_binds() -> None:
    """Daily cap 2,500,000 with 1,000,000 per stock at 100,000 a share: 10 + 10 shares, then 500,000 left
    buys 5 shares; the fourth stock finds 0 left."""
    limits = RiskLimits(max_daily_investment=2_500_000)
    scan = [row(f"00000{i}", 9.0 - i * 0.1, 100_000) for i in range(1, 5)]
    plan = plan_buys(scan, limits, RICH)
    assert [b.quantity for b in plan.buys] == [10, 10, 5]
    assert plan.buys[2].bound_by is LimitKind.DAILY_TOTAL
    assert plan.total == 2_500_000
    assert plan.skipped[0].reason is SkipReason.DAILY_BUDGET_EXHAUSTED


def test_users_own_daily_limit_binds_below_system_cap() -> None:
    """User's own limit 1,500,000 < system 10,000,000: 1,000,000 (10 at 100,000) then 500,000 (5 shares)."""
    limits = RiskLimits(daily_limit=1_500_000)
    scan = [row("000001", 9.0, 100_000), row("000002", 8.0, 100_000)]
    plan = plan_buys(scan, limits, RICH)
    assert [(b.quantity, b.bound_by) for b in plan.buys] == [
        (10, LimitKind.PER_STOCK),
        (5, LimitKind.USER_DAILY_LIMIT),
    ]


def test_spent_today_counts_against_the_daily_budget() -> None:
    """9,800,000 already spent today: 200,000 left buys 2 shares at 100,000."""
    plan = plan_buys(
        [row("000001", 9.0, 100_000)], RiskLimits(), AccountState(cash=10**8, spent_today=9_800_000)
    )
    assert plan.buys[0].quantity == 2


def test_stock_count_includes_existing_holdings() -> None:
    """Max 10 stocks, 8 already held: only 2 new ones; the third is skipped with MAX_STOCK_COUNT."""
    held = frozenset(f"1000{i:02d}" for i in range(8))
    scan = [row(f"00000{i}", 9.0 - i * 0.1, 10_000) for i in range(1, 4)]
    plan = plan_buys(scan, RiskLimits(), AccountState(cash=10**8, held_codes=held))
    assert len(plan.buys) == 2
    assert [s.reason for s in plan.skipped] == [SkipReason.MAX_STOCK_COUNT]


def test_cash_binds_including_fee() -> None:
    """Cash 500,000 at 50,000 a share: 10 shares cost 500,075 with the 0.015% fee, so only 9 (450,067)."""
    plan = plan_buys([row("000001", 9.0, 50_000)], RiskLimits(), AccountState(cash=500_000))
    [b] = plan.buys
    assert (b.quantity, b.bound_by) == (9, LimitKind.CASH)


def test_cash_runs_out_across_buys() -> None:
    """Cash 1,200,000: first buy 10 x 100,000 = 1,000,000 + 150 fee leaves 199,850 -> 1 share next,
    then 99,835 left, less than a share: INSUFFICIENT_CASH."""
    scan = [row("000001", 9.0, 100_000), row("000002", 8.0, 100_000), row("000003", 7.5, 100_000)]
    plan = plan_buys(scan, RiskLimits(), AccountState(cash=1_200_000))
    assert [b.quantity for b in plan.buys] == [10, 1]
    assert plan.skipped[0].reason is SkipReason.INSUFFICIENT_CASH


def test_already_held_and_bought_today_are_skipped() -> None:
    scan = [row("000001", 9.0, 10_000), row("000002", 8.0, 10_000), row("000003", 7.5, 10_000)]
    state = AccountState(cash=10**8, held_codes=frozenset({"000001"}), bought_today=frozenset({"000002"}))
    plan = plan_buys(scan, RiskLimits(), state)
    assert [b.code for b in plan.buys] == ["000003"]
    assert {s.code: s.reason for s in plan.skipped} == {
        "000001": SkipReason.ALREADY_HELD,
        "000002": SkipReason.BOUGHT_TODAY,
    }


@pytest.mark.parametrize(("allow", "bought"), [(True, 1), (False, 0)])
def test_rebuy_after_close_same_day_is_a_setting(allow: bool, bought: int) -> None:
    state = AccountState(cash=10**8, closed_today=frozenset({"000001"}))
    plan = plan_buys([row("000001", 9.0, 10_000)], RiskLimits(allow_rebuy_same_day=allow), state)
    assert len(plan.buys) == bought
    if not allow:
        assert plan.skipped[0].reason is SkipReason.CLOSED_TODAY


def test_price_above_per_stock_limit_gives_zero_quantity() -> None:
    """A 1,200,000 KRW share cannot fit 1,000,000 per stock: quantity 0, skipped with its reason."""
    plan = plan_buys([row("000001", 9.0, 1_200_000)], RiskLimits(), RICH)
    assert plan.buys == ()
    assert plan.skipped[0].reason is SkipReason.PRICE_ABOVE_PER_STOCK_LIMIT


def test_duplicates_and_invalid_ticks() -> None:
    scan = [row("000001", 9.0, 10_000), row("000001", 8.0, 10_000), row("000002", 8.0, 10_005)]
    plan = plan_buys(scan, RiskLimits(), RICH)
    assert [b.code for b in plan.buys] == ["000001"]
    assert {s.reason for s in plan.skipped} == {SkipReason.DUPLICATE_IN_SCAN, SkipReason.INVALID_PRICE}


def test_limits_validate() -> None:
    with pytest.raises(ValueError):
        RiskLimits(max_per_stock=0)
    with pytest.raises(ValueError):
        ScanRow(code="5930", name="x", score=8.0, price=100)


def test_a_run_can_only_tighten_the_limits() -> None:
    from autotrade.domain.risk import RiskLimits
    from autotrade.trading.buys import tightened

    base = RiskLimits(max_daily_investment=10_000_000, max_stock_count=10, max_per_stock=1_000_000)
    t = tightened(base, {"max_stock_count": 1, "max_per_stock": 5_000_000, "max_daily_investment": 2_000_000})
    assert (t.max_stock_count, t.max_per_stock, t.max_daily_investment) == (1, 1_000_000, 2_000_000)
    assert tightened(base, None) is base
    with pytest.raises(ValueError, match="unknown"):
        tightened(base, {"min_ai_score": 1})
