"""The order service's two pure steps, on intent rows in memory (no database): applying the broker's view
of an order to its intent (``fill_delta``) and finding an unrecorded order among the broker's
(``_find_match``)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from autotrade.domain.krx import KST
from autotrade.domain.models import Side
from autotrade.domain.orders import IntentStatus
from autotrade.store.models import OrderIntentRow
from autotrade.trading.orders import FillDelta, _find_match, fill_delta
from autotrade.trading.ports import BrokerOrder, BrokerOrderState

T0 = datetime(2026, 11, 25, 15, 40, tzinfo=KST)
S = BrokerOrderState


def intent(status: IntentStatus = IntentStatus.ACCEPTED, filled: int = 0, amount: int = 0) -> OrderIntentRow:
    return OrderIntentRow(id=7, key="k7", code="005930", side=Side.BUY, quantity=10, price=70_000,
                          order_no="0000001", status=status, filled_quantity=filled, filled_amount=amount,
                          created_at=T0, submitted_at=T0)  # fmt: skip


def order(filled: int, amount: int, state: BrokerOrderState, **kw: object) -> BrokerOrder:
    fields: dict = dict(order_no="0000001", code="005930", side=Side.BUY, quantity=10, price=70_000,
                        filled_quantity=filled, filled_amount=amount, state=state, ordered_at=T0)  # fmt: skip
    fields.update(kw)
    return BrokerOrder(**fields)


def test_new_fills_then_completion() -> None:
    row = intent()
    # 4 filled at 70,000: 280,000 new; still working.
    assert fill_delta(row, order(4, 280_000, S.OPEN)) == FillDelta(7, 4, 280_000, False, 0)
    assert (row.status, row.filled_quantity, row.filled_amount) == (IntentStatus.PARTIALLY_FILLED, 4, 280_000)
    assert fill_delta(row, order(4, 280_000, S.OPEN)) is None  # nothing new
    # All 10: 6 more, 420,000 more; done.
    assert fill_delta(row, order(10, 700_000, S.DONE)) == FillDelta(7, 6, 420_000, True, 0)
    assert row.status is IntentStatus.FILLED
    assert fill_delta(row, order(10, 700_000, S.DONE)) is None  # a final intent takes nothing more


def test_an_order_that_ends_short_reports_what_was_left() -> None:
    row = intent(IntentStatus.PARTIALLY_FILLED, 4, 280_000)
    # Ended with 6 filled of 10: 2 new (140,000), 4 never filled.
    assert fill_delta(row, order(6, 420_000, S.ENDED)) == FillDelta(7, 2, 140_000, True, 4)
    assert row.status is IntentStatus.EXPIRED and row.filled_quantity == 6
    untouched = intent()
    assert fill_delta(untouched, order(0, 0, S.ENDED)) == FillDelta(7, 0, 0, True, 10)
    assert untouched.status is IntentStatus.EXPIRED


def test_a_broker_view_that_does_not_fit_is_refused() -> None:
    with pytest.raises(ValueError, match="order 0000002 does not belong to intent k7"):
        fill_delta(intent(), order(1, 70_000, S.OPEN, order_no="0000002"))
    with pytest.raises(ValueError, match="broker reports fewer filled shares than recorded for k7"):
        fill_delta(intent(IntentStatus.PARTIALLY_FILLED, 4, 280_000), order(3, 210_000, S.OPEN))


def test_the_match_is_the_same_order_placed_after_the_intent() -> None:
    row = intent(IntentStatus.UNKNOWN)
    row.order_no = None
    same = dict(filled=0, amount=0, state=S.OPEN)
    wrong = [
        order(**same, order_no="0000001", code="000660"),
        order(**same, order_no="0000002", side=Side.SELL),
        order(**same, order_no="0000003", quantity=9),
        order(**same, order_no="0000004", price=69_900),
        order(**same, order_no="0000005", ordered_at=T0 - timedelta(minutes=2, seconds=1)),  # before the skew
    ]
    assert _find_match(row, wrong, set()) is None
    # Two fit (one exactly 2 minutes before the send, the clock skew allowed; one with no time): the lower
    # order number wins, unless claimed by another intent already.
    early = order(**same, order_no="0000007", ordered_at=T0 - timedelta(minutes=2))
    timeless = order(**same, order_no="0000009", ordered_at=None)
    assert _find_match(row, [*wrong, timeless, early], set()) is early
    assert _find_match(row, [*wrong, timeless, early], {"0000007"}) is timeless
    # A market intent matches whatever price the broker shows, and a market order matches any intent price.
    row.price = None
    assert _find_match(row, [order(**same, order_no="0000011", price=71_000)], set()) is not None
    row.price = 70_000
    assert _find_match(row, [order(**same, order_no="0000012", price=None)], set()) is not None
    # Without a send time the creation time counts.
    row.submitted_at = None
    row.created_at = T0 + timedelta(minutes=10)
    assert _find_match(row, [early], set()) is None


def test_an_answer_that_comes_after_another_run_found_the_order_adds_nothing() -> None:
    """Run A sends and waits; run B's reconciliation finds the very order at the broker (ACCEPTED, even
    filled) before A's answer lands. A's order number then changes nothing; another number is refused."""
    from autotrade.domain.orders import IllegalIntentTransition, IntentEvent
    from autotrade.trading.orders import late_answer

    for found in (IntentStatus.ACCEPTED, IntentStatus.PARTIALLY_FILLED, IntentStatus.FILLED):
        row = intent(found)
        assert late_answer(row, IntentEvent.ACK, "0000001", None) is found
        assert (row.status, row.order_no) == (found, "0000001")
        # A's call timed out instead: its unknown outcome is no news either.
        timed_out = intent(found)
        assert late_answer(timed_out, IntentEvent.FAIL_UNKNOWN, None, "ReadTimeout") is found
    with pytest.raises(IllegalIntentTransition):
        late_answer(intent(IntentStatus.ACCEPTED), IntentEvent.ACK, "0000002", None)
    unknown = intent(IntentStatus.UNKNOWN)  # the call timed out meanwhile: the number is taken
    unknown.order_no = None
    assert late_answer(unknown, IntentEvent.ACK, "0000003", None) is IntentStatus.ACCEPTED
    assert unknown.order_no == "0000003"
