"""Every scan row not bought carries its reason, the low scores included (not only the first of them)."""

from autotrade.domain.models import ScanRow, SkipReason
from autotrade.domain.risk import AccountState, RiskLimits, plan_buys


def test_every_low_score_is_skipped_with_its_reason() -> None:
    """Minimum 7.0: 6.9 and 6.0 are both skipped as LOW_SCORE; 8.0 is bought (1,000,000 / 10,000 = 100)."""
    scan = [
        ScanRow(code="000001", name="a", score=6.0, price=10_000),
        ScanRow(code="000002", name="b", score=8.0, price=10_000),
        ScanRow(code="000003", name="c", score=6.9, price=10_000),
    ]
    plan = plan_buys(scan, RiskLimits(), AccountState(cash=100_000_000))
    assert [(b.code, b.quantity) for b in plan.buys] == [("000002", 100)]
    assert [(s.code, s.reason) for s in plan.skipped] == [
        ("000003", SkipReason.LOW_SCORE),
        ("000001", SkipReason.LOW_SCORE),
    ]
