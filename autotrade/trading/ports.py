"""What the trading services need from a broker account, in domain terms.

The Kiwoom client (directly, or through the vault's gateway) is adapted to this at the edge
(:mod:`autotrade.trading.kiwoom_port`), so the services never see Kiwoom field names or codes.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from autotrade.domain.models import Holding, Side, average_of


@dataclass(frozen=True, slots=True)
class OrderRef:
    """The intent an order call is made for: its unique key, and whether an earlier call of it was made."""

    key: str
    resend: bool = False


# Set by the order protocol around each call. The vault's gateway records the key with the request, so that a
# re-send of an order whose earlier call was proved never received counts once against the day's limit.
ORDER_REF: ContextVar[OrderRef | None] = ContextVar("order_ref", default=None)


class OrderType(StrEnum):
    MARKET = "MARKET"  # continuous session or the opening auction
    LIMIT = "LIMIT"
    AFTER_HOURS_CLOSE = "AFTER_HOURS_CLOSE"  # 15:40-16:00 at today's close
    PRE_MARKET = "PRE_MARKET"  # 08:30-08:40 at the previous close
    STOP_LIMIT = "STOP_LIMIT"  # rests at the broker until the trigger trades, then a limit order


class BrokerOrderState(StrEnum):
    OPEN = "OPEN"  # working (possibly partly filled)
    DONE = "DONE"  # fully filled
    ENDED = "ENDED"  # cancelled, rejected or expired with shares unfilled


@dataclass(frozen=True, slots=True)
class BrokerOrder:
    """An order as the broker reports it today (unfilled and filled inquiries merged)."""

    order_no: str
    code: str
    side: Side
    quantity: int
    price: int | None  # None: market
    filled_quantity: int
    filled_amount: int  # sum of price x quantity over fills
    state: BrokerOrderState
    ordered_at: datetime | None = None
    fee: int = 0
    tax: int = 0
    open_quantity: int = 0  # shares still working (an OPEN order less its fills and cancelled shares)

    @property
    def avg_fill_price(self) -> int:
        if self.filled_quantity == 0:
            return 0
        return average_of(self.filled_amount, self.filled_quantity)


@dataclass(frozen=True, slots=True)
class AccountView:
    cash: int  # orderable cash
    holdings: tuple[Holding, ...]


class AccountBroker(Protocol):
    """One user's account at the broker."""

    async def place(
        self,
        side: Side,
        code: str,
        quantity: int,
        price: int | None,
        order_type: OrderType,
        stop_price: int | None = None,
    ) -> str:
        """Submit an order; return the broker order number. Never retried blindly by implementations.
        ``stop_price``: the trigger of a STOP_LIMIT order (``price`` is its limit)."""
        ...

    async def cancel(self, order_no: str, code: str, quantity: int = 0) -> str:
        """Cancel ``quantity`` open shares of an order (0: all that remain)."""
        ...

    async def account(self) -> AccountView: ...

    async def orders_today(self) -> list[BrokerOrder]: ...

    async def last_price(self, code: str) -> int: ...


class OrderRejected(Exception):
    """The broker refused the order: nothing was placed. Final."""


class NotProcessed(Exception):
    """The broker did not process the request (rate limit, bad token): nothing was placed; safe to resend."""


class OutcomeUnknown(Exception):
    """The call failed in a way that may or may not have placed the order (timeout, 5xx, dropped response)."""


class BrokerUnavailable(Exception):
    """A query failed after its retries; try again later."""
