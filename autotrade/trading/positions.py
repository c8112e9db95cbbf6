"""Fills and positions: the broker's orders of the day are applied to the intents that placed them.

New fills become ``fills`` and ``trade_records`` rows (idempotent: a fill is keyed by its order and the
cumulative quantity it brought the order to). A buy that will fill no further opens a position at its real
average fill price and arms the three-tier exit; a sell fill or a sell that ended unfilled goes to the exit
engine as an event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from autotrade.domain.calendar import hours_of
from autotrade.domain.exits import ExitEvent, RestingEnded, RestingFilled, SellEnded, SellFilled
from autotrade.domain.krx import KST, CostRates
from autotrade.domain.models import ExitReason, Side, SignalStatus, Tier, TradeAction, average_of
from autotrade.domain.orders import FINAL_STATUSES
from autotrade.store.db import Database
from autotrade.store.models import (
    FillRow,
    OrderIntentRow,
    ThreeTierStrategy,
    TradeRecordRow,
    TradingSignal,
)
from autotrade.trading.buys import AccountRef
from autotrade.trading.exit_engine import ExitEngine, PendingSell, is_resting
from autotrade.trading.orders import FillDelta, fill_delta
from autotrade.trading.ports import AccountBroker, BrokerOrder, BrokerOrderState, OrderType

log = logging.getLogger(__name__)

EXIT_REASON = {
    Tier.STOP_LOSS: ExitReason.STOP_LOSS,
    Tier.PRESERVE: ExitReason.PRESERVE,
    Tier.TAKE_PROFIT: ExitReason.TAKE_PROFIT,
}


@dataclass(slots=True)
class SyncResult:
    user_id: str
    account_no: str
    buy_fills: list[tuple[str, int, int]] = field(default_factory=list)  # code, qty, avg price
    sell_fills: list[tuple[str, Tier, int, int, int]] = field(
        default_factory=list
    )  # code, tier, qty, px, P&L
    armed: list[tuple[str, int, int]] = field(default_factory=list)  # code, qty, entry
    pending_sells: list[PendingSell] = field(default_factory=list)


class PositionService:
    def __init__(
        self, db: Database, engine: ExitEngine, costs: CostRates, clock: Callable[[], datetime]
    ) -> None:
        self.db = db
        self.engine = engine
        self.costs = costs
        self.clock = clock

    async def sync_account(self, ref: AccountRef, broker: AccountBroker, day: date) -> SyncResult:
        orders = {o.order_no: o for o in await broker.orders_today()}
        return self.apply_orders(ref, orders, day)

    def apply_orders(self, ref: AccountRef, orders: dict[str, BrokerOrder], day: date) -> SyncResult:
        result = SyncResult(ref.user_id, ref.account_no)
        now = self.clock()
        sell_events: list[tuple[int, ExitEvent]] = []
        with self.db.unit_of_work() as s:
            rows = s.scalars(
                sa.select(OrderIntentRow)
                .where(
                    OrderIntentRow.account_no == ref.account_no,
                    OrderIntentRow.trading_day == day,
                    OrderIntentRow.order_no.is_not(None),
                    OrderIntentRow.status.not_in(list(FINAL_STATUSES)),
                )
                .order_by(OrderIntentRow.id)
            ).all()
            for row in rows:
                order = orders.get(row.order_no or "")
                if order is None:
                    continue
                order = past_its_session(order, row.trade_type, row.trading_day, now)
                delta = fill_delta(row, order)
                if delta is None:
                    continue
                if delta.quantity > 0:
                    price = average_of(delta.amount, delta.quantity)
                    self._record_fill(s, row, order, delta, now)
                    if row.side is Side.BUY:
                        result.buy_fills.append((row.code, delta.quantity, price))
                    else:
                        pnl = self._record_sell_trade(s, row, delta, now, day)
                        result.sell_fills.append(
                            (row.code, row.tier or Tier.STOP_LOSS, delta.quantity, price, pnl)
                        )
                        if row.strategy_id is not None and is_resting(row):
                            sell_events.append((row.strategy_id, RestingFilled(delta.quantity, price, now)))
                        elif row.strategy_id is not None and row.tier is not None:
                            sell_events.append(
                                (row.strategy_id, SellFilled(row.tier, delta.quantity, price, now))
                            )
                if row.side is Side.SELL and row.strategy_id and is_resting(row):
                    if delta.done and row.filled_quantity < row.quantity:
                        sell_events.append((row.strategy_id, RestingEnded(now)))
                elif row.side is Side.SELL and delta.unfilled_at_end and row.strategy_id and row.tier:
                    sell_events.append((row.strategy_id, SellEnded(row.tier, delta.unfilled_at_end, now)))
                if row.side is Side.BUY and delta.done:
                    armed = self._open_position(s, row, day)
                    if armed is not None:
                        result.armed.append(armed)
        for strategy_id, event in sell_events:
            result.pending_sells.extend(self.engine.apply(strategy_id, event))
        return result

    def _record_fill(
        self, s: Session, row: OrderIntentRow, order: BrokerOrder, delta: FillDelta, at: datetime
    ) -> None:
        amount = delta.amount
        fee = self.costs.fee(amount)
        tax = self.costs.sell_tax(amount) if row.side is Side.SELL else 0
        s.add(
            FillRow(
                intent_id=row.id, user_id=row.user_id, account_no=row.account_no, order_no=order.order_no,
                fill_no=str(row.filled_quantity), code=row.code, side=row.side, quantity=delta.quantity,
                price=average_of(amount, delta.quantity), fee=fee, tax=tax, executed_at=at,
            )
        )  # fmt: skip
        if row.side is Side.BUY:
            s.add(
                TradeRecordRow(
                    trade_id=f"{row.account_no}:{order.order_no}:{row.filled_quantity}", user_id=row.user_id,
                    account_no=row.account_no, code=row.code, name=self._name(s, row), action=TradeAction.BUY,
                    quantity=delta.quantity, price=average_of(amount, delta.quantity), amount=amount, fee=fee,
                    tax=0, executed_at=at, trading_day=row.trading_day, signal_score=self._score(s, row),
                    intent_id=row.id,
                )
            )  # fmt: skip

    def _record_sell_trade(
        self, s: Session, row: OrderIntentRow, delta: FillDelta, at: datetime, day: date
    ) -> int:
        strategy = s.get_one(ThreeTierStrategy, row.strategy_id) if row.strategy_id else None
        entry = strategy.entry_price if strategy else 0
        amount = delta.amount
        fee, tax = self.costs.fee(amount), self.costs.sell_tax(amount)
        cost_basis = entry * delta.quantity
        pnl = amount - cost_basis - fee - tax - self.costs.fee(cost_basis)
        s.add(
            TradeRecordRow(
                trade_id=f"{row.account_no}:{row.order_no}:{row.filled_quantity}", user_id=row.user_id,
                account_no=row.account_no, code=row.code, name=strategy.name if strategy else row.code,
                action=TradeAction.PRESERVE if row.tier is Tier.PRESERVE else TradeAction.SELL,
                quantity=delta.quantity, price=average_of(amount, delta.quantity), amount=amount, fee=fee,
                tax=tax, executed_at=at, trading_day=day,
                exit_reason=EXIT_REASON.get(row.tier) if row.tier else None, profit_loss=pnl,
                strategy_id=row.strategy_id, intent_id=row.id,
            )
        )  # fmt: skip
        return pnl

    def _open_position(self, s: Session, row: OrderIntentRow, day: date) -> tuple[str, int, int] | None:
        if row.filled_quantity == 0:
            self._signal_status(s, row, SignalStatus.UNFILLED)
            return None
        entry = average_of(row.filled_amount, row.filled_quantity)
        complete = row.filled_quantity == row.quantity
        self._signal_status(s, row, SignalStatus.FILLED if complete else SignalStatus.PARTIALLY_FILLED)
        self.engine.arm(
            s, user_id=row.user_id, account_no=row.account_no, code=row.code, name=self._name(s, row),
            quantity=row.filled_quantity, entry_price=entry, entry_date=day, buy_intent_key=row.key,
        )  # fmt: skip
        return row.code, row.filled_quantity, entry

    @staticmethod
    def _signal_status(s: Session, row: OrderIntentRow, status: SignalStatus) -> None:
        if row.signal_id is not None:
            s.get_one(TradingSignal, row.signal_id).status = status

    @staticmethod
    def _name(s: Session, row: OrderIntentRow) -> str:
        if row.signal_id is not None:
            return s.get_one(TradingSignal, row.signal_id).name
        return row.code

    @staticmethod
    def _score(s: Session, row: OrderIntentRow) -> float | None:
        if row.signal_id is not None:
            return s.get_one(TradingSignal, row.signal_id).score
        return None


def session_end(trade_type: str, day: date) -> datetime:
    """When an order of ``trade_type`` placed on ``day`` can no longer fill (KST, the calendar's hours)."""
    hours = hours_of(day)
    end = {
        OrderType.AFTER_HOURS_CLOSE.value: hours.after_hours_close_end,
        OrderType.PRE_MARKET.value: hours.pre_market_end,
    }.get(trade_type, hours.close)
    return datetime.combine(day, end, tzinfo=KST)


def past_its_session(order: BrokerOrder, trade_type: str, day: date, now: datetime) -> BrokerOrder:
    """An order still listed as open after its session ended will fill no further: treat it as ended.

    The broker keeps such orders in its unfilled list until the day's expiry (18:00), but an after-hours
    close order cannot fill after 16:00, so the position is opened with what filled instead of waiting for
    an expiry that the next morning's inquiries (today's orders only) would never show.
    """
    if order.state is not BrokerOrderState.OPEN or now < session_end(trade_type, day):
        return order
    return replace(order, state=BrokerOrderState.ENDED)
