"""Order intent state machine."""

from datetime import date

import pytest

from autotrade.domain.models import Side
from autotrade.domain.orders import (
    IllegalIntentTransition,
    IntentEvent,
    IntentStatus,
    OrderIntent,
    intent_key,
)

E, St = IntentEvent, IntentStatus


def new() -> OrderIntent:
    return OrderIntent(key="k", side=Side.BUY, code="005930", quantity=10, price=None)


def test_key_is_deterministic() -> None:
    k = intent_key(date(2026, 11, 25), "u1", "12345678901", "005930", "BUY")
    assert k == "2026-11-25|u1|12345678901|005930|BUY"


def test_happy_path_with_partial_fill() -> None:
    o = new()
    o.apply(E.SEND)
    o.apply(E.ACK, order_no="0000001")
    o.apply(E.FILL, filled_total=4)
    assert (o.status, o.remaining) == (St.PARTIALLY_FILLED, 6)
    o.apply(E.FILL_COMPLETE, filled_total=10)
    assert o.status is St.FILLED


def test_lost_response_then_reconciled() -> None:
    """The response was lost: UNKNOWN. Reconciliation finds the order at the broker: ACCEPTED, no resend."""
    o = new()
    o.apply(E.SEND)
    o.apply(E.FAIL_UNKNOWN)
    o.apply(E.ACK, order_no="0000007")
    assert o.status is St.ACCEPTED and o.order_no == "0000007"


def test_not_found_allows_resend() -> None:
    o = new()
    o.apply(E.SEND)
    o.apply(E.FAIL_UNKNOWN)
    o.apply(E.NOT_FOUND)
    assert o.status is St.NEW


@pytest.mark.parametrize(
    ("events", "bad"),
    [
        ([], E.ACK),  # cannot be acknowledged before it was sent
        ([E.SEND, E.REJECT], E.SEND),  # a rejected intent is final
        ([E.SEND, E.ACK], E.NOT_FOUND),  # an accepted order cannot vanish
    ],
)
def test_illegal_moves_raise(events: list[IntentEvent], bad: IntentEvent) -> None:
    o = new()
    for e in events:
        o.apply(e, order_no="0000001" if e is E.ACK else None)
    with pytest.raises(IllegalIntentTransition):
        o.apply(bad)


def test_overfill_and_order_number_mismatch_raise() -> None:
    o = new()
    o.apply(E.SEND)
    o.apply(E.ACK, order_no="0000001")
    with pytest.raises(IllegalIntentTransition):
        o.apply(E.FILL, filled_total=11)
    with pytest.raises(IllegalIntentTransition):
        o.apply(E.FILL, order_no="0000002", filled_total=1)
