"""Orders exactly once (DESIGN 3.4).

Protocol, per intent:
1. the intent row exists with its deterministic unique key (written by whoever decided the order);
2. ``NEW -> SUBMITTING`` is committed *before* the broker call;
3. the broker call; its answer is committed as ``ACCEPTED`` with the order number, ``REJECTED``, back to
   ``NEW`` when the broker did not process it, or ``UNKNOWN`` when the outcome cannot be known;
4. an intent found in ``SUBMITTING`` or ``UNKNOWN`` (a retry, a restart after a crash) is reconciled against
   the broker's orders of the day before anything is sent again: a matching order not claimed by another
   intent is adopted; if none exists *and the settle window has passed since the call* the intent returns
   to ``NEW`` and is sent again. Within the window it stays unresolved: a request that timed out on our side
   may still be working its way through the broker, and resending it then would buy twice.

Matching uses stock, side, quantity, price (limit orders) and order time not before the intent's submission.
This assumes the broker shows an accepted order in its inquiries within the settle window after the call
(default 30 s, three times the client's timeout); Kiwoom's inquiries (ka10075/ka10076) list an order as
soon as it is accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from autotrade.domain.models import Side
from autotrade.domain.orders import (
    FINAL_STATUSES,
    NEEDS_RECONCILIATION,
    IntentEvent,
    IntentStatus,
    next_status,
)
from autotrade.store.db import Database
from autotrade.store.models import OrderIntentRow
from autotrade.trading.ports import (
    ORDER_REF,
    AccountBroker,
    BrokerOrder,
    BrokerOrderState,
    NotProcessed,
    OrderRef,
    OrderRejected,
    OrderType,
    OutcomeUnknown,
)

log = logging.getLogger(__name__)

# Order time may lag our clock slightly (broker clock, seconds resolution).
CLOCK_SKEW = timedelta(minutes=2)

CrashHook = Callable[[str], None]
# Runs before an intent is claimed for sending (the resting stop is cleared out of a market sell's way); it
# raises NotProcessed when the intent cannot go yet, and may shrink or end an intent that must not go.
BeforeSend = Callable[[int, AccountBroker], Awaitable[None]]
CRASH_POINTS = ("before_submitting", "after_submitting", "after_broker_call", "after_ack")
SUBMITTING = next_status(IntentStatus.NEW, IntentEvent.SEND)

# The two writes around every broker call, built once.
_CLAIM = (
    sa.update(OrderIntentRow)
    .where(OrderIntentRow.id == sa.bindparam("p_id"), OrderIntentRow.status == IntentStatus.NEW)
    .values(status=SUBMITTING, attempts=OrderIntentRow.attempts + 1, submitted_at=sa.bindparam("p_now"))
    .returning(
        OrderIntentRow.side,
        OrderIntentRow.code,
        OrderIntentRow.quantity,
        OrderIntentRow.price,
        OrderIntentRow.trade_type,
        OrderIntentRow.key,
        OrderIntentRow.attempts,
        OrderIntentRow.stop_price,
    )
)
_SETTLE = (
    sa.update(OrderIntentRow)
    .where(OrderIntentRow.id == sa.bindparam("p_id"), OrderIntentRow.status == SUBMITTING)
    .values(
        status=sa.bindparam("p_status"),
        order_no=sa.func.coalesce(sa.bindparam("p_order_no", type_=sa.String), OrderIntentRow.order_no),
        last_error=sa.func.coalesce(sa.bindparam("p_error", type_=sa.String), OrderIntentRow.last_error),
    )
    .returning(OrderIntentRow.id)
)


def _no_crash(point: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class FillDelta:
    """New fills found on an intent's broker order since it was last looked at."""

    intent_id: int
    quantity: int
    amount: int
    done: bool  # no more fills will come (filled, or ended)
    unfilled_at_end: int  # shares left when the order ended without filling completely


class OrderService:
    def __init__(
        self,
        db: Database,
        clock: Callable[[], datetime],
        crash_hook: CrashHook = _no_crash,
        settle: timedelta = timedelta(seconds=30),
    ) -> None:
        self.db = db
        self.clock = clock
        self.crash = crash_hook
        self.settle = settle
        self.before_send: BeforeSend | None = None

    async def execute(self, intent_id: int, broker: AccountBroker) -> IntentStatus:
        """Drive one intent to the broker exactly once; safe to call again after any failure or crash, and
        from several workers at once: only the one whose ``NEW -> SUBMITTING`` lands sends it."""
        if self.before_send is not None:
            await self.before_send(intent_id, broker)
        self.crash("before_submitting")
        claimed = await self._claim(intent_id)
        if claimed is None:  # not NEW: done already, or its outcome must be found at the broker first
            status = self._status(intent_id)
            if status in NEEDS_RECONCILIATION:
                status = await self.reconcile(intent_id, broker)
            if status is not IntentStatus.NEW:
                return status
            claimed = await self._claim(intent_id)
            if claimed is None:
                return self._status(intent_id)
        side, code, qty, price, trade_type, key, attempts, stop_price = claimed
        self.crash("after_submitting")
        ref = ORDER_REF.set(OrderRef(key, resend=attempts > 1))
        try:
            order_type = OrderType(trade_type)
            if order_type is OrderType.STOP_LIMIT:
                order_no = await broker.place(side, code, qty, price, order_type, stop_price)
            else:
                order_no = await broker.place(side, code, qty, price, order_type)
        except OrderRejected as exc:
            return await self._settle(intent_id, IntentEvent.REJECT, error=str(exc))
        except NotProcessed as exc:
            await self._settle(intent_id, IntentEvent.NOT_FOUND, error=str(exc))
            raise
        except OutcomeUnknown as exc:
            await self._settle(intent_id, IntentEvent.FAIL_UNKNOWN, error=str(exc))
            raise
        except BaseException as exc:  # cancelled task, unexpected error: the order may be out there
            # before leaving: no await (a cancelled task may not get to run one)
            self._settle_now(intent_id, IntentEvent.FAIL_UNKNOWN, error=f"{type(exc).__name__}")
            raise
        finally:
            ORDER_REF.reset(ref)
        self.crash("after_broker_call")
        status = await self._settle(intent_id, IntentEvent.ACK, order_no=order_no)
        self.crash("after_ack")
        return status

    async def reconcile(self, intent_id: int, broker: AccountBroker) -> IntentStatus:
        """Resolve an intent whose outcome is unknown by looking at the broker's orders of the day."""
        orders = await broker.orders_today()
        with self.db.unit_of_work() as s:
            row = s.get_one(OrderIntentRow, intent_id)
            if row.status not in NEEDS_RECONCILIATION:
                return row.status
            others = s.scalars(
                sa.select(OrderIntentRow.order_no).where(
                    OrderIntentRow.account_no == row.account_no,
                    OrderIntentRow.trading_day == row.trading_day,
                    OrderIntentRow.id != row.id,
                )
            ).all()
            claimed = {o for o in others if o is not None}
            match = _find_match(row, orders, claimed)
            if match is None:
                sent_at = row.submitted_at or row.created_at
                if self.clock() - sent_at < self.settle:
                    log.info("intent %s not (yet) at the broker; resolved after the settle window", row.key)
                    return row.status
                log.info("intent %s not found at the broker: it will be sent again", row.key)
                row.status = next_status(row.status, IntentEvent.NOT_FOUND)
                return row.status
            log.info("intent %s found at the broker as order %s", row.key, match.order_no)
            row.status = next_status(row.status, IntentEvent.ACK)
            row.order_no = match.order_no
            return row.status

    def _status(self, intent_id: int) -> IntentStatus:
        with self.db.unit_of_work() as s:
            return s.get_one(OrderIntentRow, intent_id).status

    async def _claim(
        self, intent_id: int
    ) -> tuple[Side, str, int, int | None, str, str, int, int | None] | None:
        """``NEW -> SUBMITTING`` as one conditional write (committed before the broker call); returns what
        to send, or None when the intent was not NEW."""
        claim = self.db.batched(_CLAIM, target=("p_id",))  # an intent's row: one call of it a batch
        rows = await claim.rows({"p_id": intent_id, "p_now": self.clock()})
        if not rows:
            return None
        r = rows[0]
        return (Side(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7])

    async def _settle(
        self, intent_id: int, event: IntentEvent, *, order_no: str | None = None, error: str | None = None
    ) -> IntentStatus:
        """Record the broker's answer to the call this process made (the intent is SUBMITTING): one
        conditional write; should the intent have moved meanwhile, the state machine decides."""
        target, params = _settle_params(intent_id, event, order_no, error)
        if await self.db.batched(_SETTLE, target=("p_id",)).rows(params):
            return target
        return await self.db.run(self._late, intent_id, event, order_no, error)

    def _settle_now(
        self, intent_id: int, event: IntentEvent, *, order_no: str | None = None, error: str | None = None
    ) -> IntentStatus:
        """:meth:`_settle` in this thread, now (a task being cancelled cannot wait for a batch)."""
        target, params = _settle_params(intent_id, event, order_no, error)
        with self.db.statement() as conn:
            if conn.execute(_SETTLE, params).first() is not None:
                return target
        return self._late(intent_id, event, order_no, error)

    def _late(
        self, intent_id: int, event: IntentEvent, order_no: str | None, error: str | None
    ) -> IntentStatus:
        with self.db.unit_of_work() as s:
            return late_answer(s.get_one(OrderIntentRow, intent_id), event, order_no, error)


def _settle_params(
    intent_id: int, event: IntentEvent, order_no: str | None, error: str | None
) -> tuple[IntentStatus, dict[str, object]]:
    target = next_status(SUBMITTING, event)
    return target, {"p_id": intent_id, "p_status": target, "p_order_no": order_no,
                    "p_error": None if error is None else error[:500]}  # fmt: skip


def late_answer(
    row: OrderIntentRow, event: IntentEvent, order_no: str | None, error: str | None
) -> IntentStatus:
    """The broker's answer to this process's call, applied to an intent that moved on while it was out.
    Another run's reconciliation may have found this very order at the broker first (and even its fills):
    its order number then adds nothing, and neither does a call that ended without an answer. Anything else
    goes through the state machine, which refuses what cannot follow (an order number other than the one
    recorded is never taken silently)."""
    same_order = event is IntentEvent.ACK and row.order_no == order_no
    if row.order_no is not None and (same_order or event is IntentEvent.FAIL_UNKNOWN):
        return row.status
    row.status = next_status(row.status, event)
    if order_no is not None:
        row.order_no = order_no
    if error is not None:
        row.last_error = error[:500]
    return row.status


def _find_match(row: OrderIntentRow, orders: list[BrokerOrder], claimed: set[str]) -> BrokerOrder | None:
    since = (row.submitted_at or row.created_at) - CLOCK_SKEW
    candidates = [
        o
        for o in orders
        if o.code == row.code
        and o.side == row.side
        and o.quantity == row.quantity
        and (row.price is None or o.price is None or o.price == row.price)
        and o.order_no not in claimed
        and (o.ordered_at is None or o.ordered_at >= since)
    ]
    return min(candidates, key=lambda o: o.order_no) if candidates else None


def fill_delta(row: OrderIntentRow, order: BrokerOrder) -> FillDelta | None:
    """Apply the broker's view of ``order`` to the intent ``row`` (in a session); return what is new."""
    if row.order_no != order.order_no:
        raise ValueError(f"order {order.order_no} does not belong to intent {row.key}")
    if row.status in FINAL_STATUSES:
        return None
    new_qty = order.filled_quantity - row.filled_quantity
    new_amount = order.filled_amount - row.filled_amount
    if new_qty < 0:
        raise ValueError(f"broker reports fewer filled shares than recorded for {row.key}")
    ended = order.state is BrokerOrderState.ENDED
    if new_qty == 0 and not ended and order.state is not BrokerOrderState.DONE:
        return None
    complete = order.filled_quantity >= row.quantity
    if new_qty > 0 and not complete:
        row.status = next_status(row.status, IntentEvent.FILL)
    if complete:
        row.status = next_status(row.status, IntentEvent.FILL_COMPLETE)
    elif ended:
        # Cancelled, rejected after acceptance or expired at the close: no more fills will come.
        row.status = next_status(row.status, IntentEvent.EXPIRE)
    row.filled_quantity = order.filled_quantity
    row.filled_amount = order.filled_amount
    done = row.status in FINAL_STATUSES
    unfilled = row.quantity - row.filled_quantity if ended else 0
    return FillDelta(row.id, new_qty, new_amount, done, unfilled)
