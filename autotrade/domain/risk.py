"""Per-user signals and risk sizing (DESIGN section 2).

Pure: given the scan, the user's limits and the broker's account state of the moment, decide which buys to
place and why every other row was skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from autotrade.domain.krx import CostRates, is_valid_tick
from autotrade.domain.models import LimitKind, ScanRow, SkipReason


@dataclass(frozen=True, slots=True)
class RiskLimits:
    min_ai_score: float = 7.0
    max_daily_investment: int = 10_000_000
    daily_limit: int = 10_000_000  # the user's own limit
    max_stock_count: int = 10
    max_per_stock: int = 1_000_000
    allow_rebuy_same_day: bool = True

    def __post_init__(self) -> None:
        for name in ("max_daily_investment", "daily_limit", "max_stock_count", "max_per_stock"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @property
    def daily_budget(self) -> int:
        """The lower of the system-wide daily cap and the user's own daily limit."""
        return min(self.max_daily_investment, self.daily_limit)


@dataclass(frozen=True, slots=True)
class AccountState:
    """The account as the broker reports it now, plus what was already done today."""

    cash: int  # orderable cash reported by the broker
    held_codes: frozenset[str] = frozenset()
    bought_today: frozenset[str] = frozenset()
    closed_today: frozenset[str] = frozenset()
    spent_today: int = 0  # KRW already committed to buys today (orders placed, filled or not)


@dataclass(frozen=True, slots=True)
class PlannedBuy:
    code: str
    name: str
    score: float
    price: int
    quantity: int
    bound_by: LimitKind

    @property
    def amount(self) -> int:
        return self.price * self.quantity


@dataclass(frozen=True, slots=True)
class SkippedSignal:
    code: str
    name: str
    score: float
    price: int
    reason: SkipReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class BuyPlan:
    buys: tuple[PlannedBuy, ...]
    skipped: tuple[SkippedSignal, ...] = field(default=())

    @property
    def total(self) -> int:
        return sum(b.amount for b in self.buys)


def plan_buys(
    scan: Sequence[ScanRow],
    limits: RiskLimits,
    account: AccountState,
    costs: CostRates | None = None,
) -> BuyPlan:
    """Size buys for one user and one account; every row not bought carries a reason.

    Budget for a stock = min(max_per_stock, daily budget left, cash left); quantity = floor(budget / price),
    reduced if the brokerage fee would push the order past the cash the broker reports.
    """
    costs = costs or CostRates()
    buys: list[PlannedBuy] = []
    skipped: list[SkippedSignal] = []
    daily_left = max(limits.daily_budget - account.spent_today, 0)
    cash_left = max(account.cash, 0)
    holdings = len(account.held_codes)
    seen: set[str] = set()

    def skip(row: ScanRow, reason: SkipReason, detail: str = "") -> None:
        skipped.append(SkippedSignal(row.code, row.name, row.score, row.price, reason, detail))

    ordered = sorted(scan, key=lambda r: (-r.score, r.code))
    for row in ordered:
        if row.score < limits.min_ai_score:
            skip(row, SkipReason.LOW_SCORE, f"score {row.score} < {limits.min_ai_score}")
            continue
        if row.code in seen:
            skip(row, SkipReason.DUPLICATE_IN_SCAN)
            continue
        seen.add(row.code)
        if row.price <= 0 or not is_valid_tick(row.price):
            skip(row, SkipReason.INVALID_PRICE, f"price {row.price} is not a valid KRX tick")
            continue
        if row.code in account.held_codes:
            skip(row, SkipReason.ALREADY_HELD)
            continue
        if row.code in account.bought_today:
            skip(row, SkipReason.BOUGHT_TODAY)
            continue
        if row.code in account.closed_today and not limits.allow_rebuy_same_day:
            skip(row, SkipReason.CLOSED_TODAY)
            continue
        if holdings >= limits.max_stock_count:
            skip(row, SkipReason.MAX_STOCK_COUNT, f"{holdings} of {limits.max_stock_count} slots used")
            continue
        bound, budget = _binding_budget(limits, daily_left, cash_left)
        qty = budget // row.price
        while qty > 0 and costs.buy_cost(qty * row.price) > cash_left:
            qty -= 1
            bound = LimitKind.CASH
        if qty == 0:
            skip(row, _zero_quantity_reason(bound), f"budget {budget} KRW < price {row.price} KRW")
            continue
        buy = PlannedBuy(row.code, row.name, row.score, row.price, qty, bound)
        buys.append(buy)
        daily_left -= buy.amount
        cash_left -= costs.buy_cost(buy.amount)
        holdings += 1
    return BuyPlan(tuple(buys), tuple(skipped))


def _binding_budget(limits: RiskLimits, daily_left: int, cash_left: int) -> tuple[LimitKind, int]:
    daily_kind = (
        LimitKind.USER_DAILY_LIMIT
        if limits.daily_limit < limits.max_daily_investment
        else LimitKind.DAILY_TOTAL
    )
    # Order matters on ties: report the most specific limit first.
    candidates = [
        (LimitKind.PER_STOCK, limits.max_per_stock),
        (daily_kind, daily_left),
        (LimitKind.CASH, cash_left),
    ]
    return min(candidates, key=lambda c: c[1])


def _zero_quantity_reason(bound: LimitKind) -> SkipReason:
    if bound is LimitKind.PER_STOCK:
        return SkipReason.PRICE_ABOVE_PER_STOCK_LIMIT
    if bound is LimitKind.CASH:
        return SkipReason.INSUFFICIENT_CASH
    return SkipReason.DAILY_BUDGET_EXHAUSTED
