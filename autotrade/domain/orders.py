"""Order intents: the exactly-once protocol's state machine (DESIGN section 3.4).

Kiwoom has no client order id and a response can be lost after the broker accepted an order. So an intent
row with a deterministic unique key is written before the call; the broker order number is recorded after;
on retry or restart the broker's open and filled orders are reconciled before anything is submitted again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from autotrade.domain.models import Side


class IntentStatus(StrEnum):
    NEW = "NEW"  # written, not yet sent
    SUBMITTING = "SUBMITTING"  # sent; outcome not known yet (a crash here needs reconciliation)
    UNKNOWN = "UNKNOWN"  # the call failed in a way that may or may not have placed the order
    ACCEPTED = "ACCEPTED"  # the broker gave an order number
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"  # a day order that died at the close with shares unfilled
    REJECTED = "REJECTED"  # the broker refused it; nothing was placed


class IntentEvent(StrEnum):
    SEND = "SEND"
    ACK = "ACK"  # order number received, or found at the broker by reconciliation
    FAIL_UNKNOWN = "FAIL_UNKNOWN"
    REJECT = "REJECT"  # definite refusal
    NOT_FOUND = "NOT_FOUND"  # reconciliation proved the broker never got it: safe to send again
    FILL = "FILL"
    FILL_COMPLETE = "FILL_COMPLETE"
    CANCEL = "CANCEL"
    EXPIRE = "EXPIRE"


St, E = IntentStatus, IntentEvent

INTENT_TRANSITIONS: dict[tuple[IntentStatus, IntentEvent], IntentStatus] = {
    (St.NEW, E.SEND): St.SUBMITTING,
    (St.NEW, E.EXPIRE): St.EXPIRED,  # never sent, and its session is over: it can no longer be placed
    (St.SUBMITTING, E.ACK): St.ACCEPTED,
    (St.SUBMITTING, E.FAIL_UNKNOWN): St.UNKNOWN,
    (St.SUBMITTING, E.REJECT): St.REJECTED,
    (St.SUBMITTING, E.NOT_FOUND): St.NEW,
    (St.SUBMITTING, E.FILL): St.PARTIALLY_FILLED,
    (St.SUBMITTING, E.FILL_COMPLETE): St.FILLED,
    (St.UNKNOWN, E.ACK): St.ACCEPTED,
    (St.UNKNOWN, E.EXPIRE): St.EXPIRED,  # its day is over and the broker's day lists never showed it
    (St.SUBMITTING, E.EXPIRE): St.EXPIRED,
    (St.UNKNOWN, E.NOT_FOUND): St.NEW,
    (St.UNKNOWN, E.FILL): St.PARTIALLY_FILLED,
    (St.UNKNOWN, E.FILL_COMPLETE): St.FILLED,
    (St.ACCEPTED, E.FILL): St.PARTIALLY_FILLED,
    (St.ACCEPTED, E.FILL_COMPLETE): St.FILLED,
    (St.ACCEPTED, E.CANCEL): St.CANCELLED,
    (St.ACCEPTED, E.EXPIRE): St.EXPIRED,
    (St.PARTIALLY_FILLED, E.FILL): St.PARTIALLY_FILLED,
    (St.PARTIALLY_FILLED, E.FILL_COMPLETE): St.FILLED,
    (St.PARTIALLY_FILLED, E.CANCEL): St.CANCELLED,
    (St.PARTIALLY_FILLED, E.EXPIRE): St.EXPIRED,
}

OPEN_STATUSES = frozenset({St.SUBMITTING, St.UNKNOWN, St.ACCEPTED, St.PARTIALLY_FILLED})
NEEDS_RECONCILIATION = frozenset({St.SUBMITTING, St.UNKNOWN})
FINAL_STATUSES = frozenset({St.FILLED, St.CANCELLED, St.EXPIRED, St.REJECTED})


class IllegalIntentTransition(RuntimeError):
    pass


def next_status(status: IntentStatus, event: IntentEvent) -> IntentStatus:
    nxt = INTENT_TRANSITIONS.get((status, event))
    if nxt is None:
        raise IllegalIntentTransition(f"{event} is not allowed for an intent in status {status}")
    return nxt


def intent_key(day: date, user_id: str, account_no: str, code: str, purpose: str) -> str:
    """The deterministic unique key of an intent: the same decision always maps to the same key."""
    return f"{day.isoformat()}|{user_id}|{account_no}|{code}|{purpose}"


@dataclass(slots=True)
class OrderIntent:
    key: str
    side: Side
    code: str
    quantity: int
    price: int | None  # None: market order
    status: IntentStatus = IntentStatus.NEW
    order_no: str | None = None
    filled: int = 0
    events: list[IntentEvent] = field(default_factory=list)

    def apply(
        self, event: IntentEvent, *, order_no: str | None = None, filled_total: int | None = None
    ) -> None:
        """Move to the next status; ``filled_total`` is the cumulative filled quantity the broker reports."""
        if filled_total is not None:
            if filled_total > self.quantity:
                raise IllegalIntentTransition(f"filled {filled_total} exceeds ordered {self.quantity}")
            if filled_total < self.filled:
                raise IllegalIntentTransition("filled quantity cannot go down")
        if order_no is not None and self.order_no is not None and order_no != self.order_no:
            raise IllegalIntentTransition(f"order number mismatch: {order_no} != {self.order_no}")
        self.status = next_status(self.status, event)
        self.events.append(event)
        if order_no is not None:
            self.order_no = order_no
        if filled_total is not None:
            self.filled = filled_total

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled
