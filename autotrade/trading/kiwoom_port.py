"""The edge between the trading services and Kiwoom: maps the client's typed messages to domain terms.

Order state from the inquiries (Kiwoom has no single "order status" TR):
- an order in ka10075 (``oso``) with unfilled shares is OPEN;
- an order in ka10076 (``cntr``) whose filled quantity reached the order quantity is DONE;
- an order listed with fills but no longer open, or whose status text says cancelled / rejected / expired,
  is ENDED with what filled;
- an order the broker no longer lists at all is not reported (callers keep their own last known state).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time
from typing import Protocol

from autotrade.broker.errors import BrokerError
from autotrade.broker.messages import (
    Deposit,
    FilledOrder,
    HoldingsReport,
    OrderAck,
    Quote,
    TradeType,
    UnfilledOrder,
)
from autotrade.broker.messages import Side as WireSide
from autotrade.domain.krx import KST
from autotrade.domain.models import Holding, Side
from autotrade.trading.ports import (
    AccountView,
    BrokerOrder,
    BrokerOrderState,
    BrokerUnavailable,
    NotProcessed,
    OrderRejected,
    OrderType,
    OutcomeUnknown,
)

TRADE_TYPES = {
    OrderType.MARKET: TradeType.MARKET,
    OrderType.LIMIT: TradeType.LIMIT,
    OrderType.AFTER_HOURS_CLOSE: TradeType.AFTER_HOURS_CLOSE,
    OrderType.PRE_MARKET: TradeType.PRE_MARKET,
    OrderType.STOP_LIMIT: TradeType.STOP_LIMIT,
}
ENDED_WORDS = ("취소", "거부", "만료", "cancel", "reject", "expire")


class KiwoomLike(Protocol):
    """What the adapter uses of a Kiwoom session (the client's, or the vault gateway's gated one)."""

    async def buy(self, code: str, quantity: int, price: int | None, trade_type: TradeType) -> OrderAck: ...

    async def sell(
        self,
        code: str,
        quantity: int,
        price: int | None,
        trade_type: TradeType,
        *,
        stop_price: int | None = None,
    ) -> OrderAck: ...

    async def cancel(self, orig_order_no: str, code: str, quantity: int = 0) -> OrderAck: ...

    async def deposit(self) -> Deposit: ...

    async def holdings(self) -> HoldingsReport: ...

    async def unfilled_orders(self, code: str | None = None) -> list[UnfilledOrder]: ...

    async def filled_orders(self, code: str | None = None) -> list[FilledOrder]: ...

    async def quote(self, code: str) -> Quote: ...


class KiwoomAccount:
    """:class:`~autotrade.trading.ports.AccountBroker` over a Kiwoom session."""

    def __init__(self, session: KiwoomLike, clock: Callable[[], datetime] | None = None) -> None:
        self.session = session
        self.clock = clock or (lambda: datetime.now(KST))

    async def place(
        self,
        side: Side,
        code: str,
        quantity: int,
        price: int | None,
        order_type: OrderType,
        stop_price: int | None = None,
    ) -> str:
        trade_type = TRADE_TYPES[order_type]
        wire_price = price if trade_type.needs_price else None
        try:
            if side is Side.BUY:
                ack = await self.session.buy(code, quantity, wire_price, trade_type)
            else:
                ack = await self.session.sell(code, quantity, wire_price, trade_type, stop_price=stop_price)
        except BrokerError as exc:
            raise _order_error(exc) from None
        return ack.order_no

    async def cancel(self, order_no: str, code: str, quantity: int = 0) -> str:
        try:
            return (await self.session.cancel(order_no, code, quantity)).order_no
        except BrokerError as exc:
            raise _order_error(exc) from None

    async def account(self) -> AccountView:
        try:
            deposit = await self.session.deposit()
            report = await self.session.holdings()
        except BrokerError as exc:
            raise BrokerUnavailable(str(exc)) from None
        holdings = tuple(
            Holding(code=h.code, quantity=h.quantity, avg_price=h.avg_price, name=h.name)
            for h in report.holdings
            if h.quantity > 0
        )
        return AccountView(cash=deposit.orderable, holdings=holdings)

    async def orders_today(self) -> list[BrokerOrder]:
        try:
            unfilled = await self.session.unfilled_orders()
            filled = await self.session.filled_orders()
        except BrokerError as exc:
            raise BrokerUnavailable(str(exc)) from None
        day = self.clock().astimezone(KST).date()  # inquiries list today's orders (broker's clock)
        orders: dict[str, BrokerOrder] = {}
        for f in filled:
            side = _side(f.side)
            if side is None:
                continue
            ended = any(w in f.status.lower() for w in ENDED_WORDS) or f.unfilled_quantity == 0
            state = (
                BrokerOrderState.DONE
                if f.filled_quantity >= f.quantity
                else BrokerOrderState.ENDED
                if ended
                else BrokerOrderState.OPEN
            )
            orders[f.order_no] = BrokerOrder(
                order_no=f.order_no, code=f.code, side=side, quantity=f.quantity, price=f.price or None,
                filled_quantity=f.filled_quantity, filled_amount=f.fill_price * f.filled_quantity,
                state=state,
                ordered_at=_at(day, f.time), fee=f.fee, tax=f.tax,
            )  # fmt: skip
        for u in unfilled:
            side = _side(u.side)
            if side is None:
                continue
            known = orders.get(u.order_no)
            # Shares cancelled off a working order (a partial cancel) leave it open with fewer unfilled
            # shares: they are not fills. The filled list counts fills; an order without any has none.
            if known is not None:
                filled_qty = known.filled_quantity
            else:
                filled_qty = u.quantity - u.unfilled_quantity if u.filled_amount else 0
            amount = known.filled_amount if known else u.filled_amount or u.last_fill_price * filled_qty
            orders[u.order_no] = BrokerOrder(
                order_no=u.order_no, code=u.code, side=side, quantity=u.quantity, price=u.price or None,
                filled_quantity=filled_qty, filled_amount=amount,
                state=BrokerOrderState.OPEN if u.unfilled_quantity > 0 else BrokerOrderState.DONE,
                ordered_at=_at(day, u.time), open_quantity=u.unfilled_quantity,
            )  # fmt: skip
        return list(orders.values())

    async def last_price(self, code: str) -> int:
        try:
            return (await self.session.quote(code)).price
        except BrokerError as exc:
            raise BrokerUnavailable(str(exc)) from None


def _side(side: WireSide | None) -> Side | None:
    return None if side is None else Side(side.value)


def _at(day: date, t: time | None) -> datetime | None:
    return None if t is None else datetime.combine(day, t, tzinfo=KST)


def _order_error(exc: BrokerError) -> Exception:
    if getattr(exc, "outcome_unknown", False):
        return OutcomeUnknown(str(exc))
    if exc.retry_safe:
        return NotProcessed(str(exc))
    return OrderRejected(str(exc))
