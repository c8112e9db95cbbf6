"""Domain value types and closed enums shared by live trading, the simulator-driven demo and the backtester.

Money is integer KRW; times are timezone-aware.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

_CODE_RE = re.compile(r"^[0-9A-Z]{6}$")


def validate_code(code: str) -> str:
    """A KRX short stock code: six characters (digits, or digits and capitals for newer listings)."""
    if not _CODE_RE.fullmatch(code):
        raise ValueError(f"stock code must be six characters, got {code!r}")
    return code


def require_aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    return moment


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class Tier(StrEnum):
    """The three exit tiers (specification names)."""

    STOP_LOSS = "STOP_LOSS"
    PRESERVE = "PRESERVE"
    TAKE_PROFIT = "TAKE_PROFIT"


class SignalStatus(StrEnum):
    PENDING = "PENDING"
    ORDERED = "ORDERED"
    SKIPPED = "SKIPPED"
    FILLED = "FILLED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    UNFILLED = "UNFILLED"
    FAILED = "FAILED"


class SkipReason(StrEnum):
    """Why a scan row did not become a buy order for a user."""

    LOW_SCORE = "LOW_SCORE"
    DUPLICATE_IN_SCAN = "DUPLICATE_IN_SCAN"
    ALREADY_HELD = "ALREADY_HELD"
    BOUGHT_TODAY = "BOUGHT_TODAY"
    CLOSED_TODAY = "CLOSED_TODAY"
    MAX_STOCK_COUNT = "MAX_STOCK_COUNT"
    DAILY_BUDGET_EXHAUSTED = "DAILY_BUDGET_EXHAUSTED"
    INSUFFICIENT_CASH = "INSUFFICIENT_CASH"
    PRICE_ABOVE_PER_STOCK_LIMIT = "PRICE_ABOVE_PER_STOCK_LIMIT"
    INVALID_PRICE = "INVALID_PRICE"


class LimitKind(StrEnum):
    """The constraint that sized (bound) a buy."""

    PER_STOCK = "PER_STOCK"
    DAILY_TOTAL = "DAILY_TOTAL"
    USER_DAILY_LIMIT = "USER_DAILY_LIMIT"
    CASH = "CASH"


class ApiStatus(StrEnum):
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    EXPIRED = "EXPIRED"
    DISABLED = "DISABLED"  # cut off by the anomaly kill switch
    DELETED = "DELETED"  # data key destroyed (crypto-shredded)


class TradeAction(StrEnum):
    BUY = "BUY"
    SELL = "SELL"
    PRESERVE = "PRESERVE"


class ExitReason(StrEnum):
    STOP_LOSS = "STOP_LOSS"
    PRESERVE = "PRESERVE"
    TAKE_PROFIT = "TAKE_PROFIT"
    EXTERNAL = "EXTERNAL"  # sold outside the product (by hand), found by reconciliation
    MAX_HOLDING = "MAX_HOLDING"  # backtester's optional maximum holding period


@dataclass(frozen=True, slots=True)
class ScanRow:
    """One row of the AI scan (specification's ``scan_results`` item)."""

    code: str
    name: str
    score: float
    price: int
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        validate_code(self.code)


@dataclass(frozen=True, slots=True)
class Holding:
    """What the broker reports as held (the broker is the truth)."""

    code: str
    quantity: int
    avg_price: int
    name: str = ""


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution reported by the broker."""

    order_no: str
    code: str
    side: Side
    quantity: int
    price: int
    at: datetime
    fill_id: str = ""
    fee: int = 0
    tax: int = 0

    def __post_init__(self) -> None:
        if self.quantity <= 0:
            raise ValueError("fill quantity must be positive")
        if self.price <= 0:
            raise ValueError("fill price must be positive")
        require_aware(self.at)

    @property
    def amount(self) -> int:
        return self.quantity * self.price


def average_of(amount: int, quantity: int) -> int:
    """The average price of ``quantity`` shares that cost ``amount`` KRW, rounded half up to the won."""
    return (2 * amount + quantity) // (2 * quantity)


def average_price(fills: list[Fill]) -> int:
    """Volume-weighted average fill price, rounded half up to the won."""
    qty = sum(f.quantity for f in fills)
    if qty == 0:
        raise ValueError("no filled quantity")
    return average_of(sum(f.amount for f in fills), qty)


@dataclass(slots=True)
class TradeRecord:
    """A realised trade (specification's ``trade_records``), with integer KRW."""

    trade_id: str
    user_id: str
    account_no: str
    code: str
    name: str
    action: TradeAction
    quantity: int
    price: int
    amount: int
    executed_at: datetime
    signal_score: float | None = None
    exit_reason: ExitReason | None = None
    profit_loss: int | None = None
    fee: int = 0
    tax: int = 0
    trading_day: date | None = None
    extra: dict[str, str] = field(default_factory=dict)
