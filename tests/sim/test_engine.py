"""Market engine: matching, sessions, costs to the won, rejections, expiry, and invariants (hypothesis)."""

from __future__ import annotations

import contextlib
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autotrade.domain.krx import KST, price_limits
from autotrade.sim.market import MarketEngine, OrderStatus, SimError

DAY = datetime(2026, 11, 24, 10, 0, tzinfo=KST)  # a Tuesday, a KRX trading day


def engine(at: datetime = DAY, **kw: object) -> MarketEngine:
    e = MarketEngine(7, start=at, **kw)  # type: ignore[arg-type]
    e.add_stock("005930", "삼성전자", 70_000)
    e.add_account("11111111", "홍길동", 10_000_000)
    return e


def test_market_buy_then_limit_sell_costs_to_the_won() -> None:
    """Buy 10 at 70,000 = 700,000 + fee 105 (0.015%); sell 5 at 71,000 = 355,000 - fee 53 - tax 710 (0.20%).

    Cash: 10,000,000 - 700,105 + 354,237 = 9,654,132.
    """
    e = engine()
    a = e.accounts["11111111"]
    buy = e.place(a, "BUY", "005930", 10, None, "3")
    assert buy.status is OrderStatus.FILLED and buy.fills[0].fee == 105
    sell = e.place(a, "SELL", "005930", 5, 71_000, "0")
    assert sell.status is OrderStatus.OPEN
    e.set_price("005930", 71_000)
    assert sell.status is OrderStatus.FILLED
    assert (sell.fills[0].fee, sell.fills[0].tax) == (53, 710)
    assert a.cash == 9_654_132
    assert a.holdings["005930"].quantity == 5 and a.holdings["005930"].avg_price == 70_000


def test_oversell_and_overspend_are_rejected() -> None:
    e = engine()
    a = e.accounts["11111111"]
    e.place(a, "BUY", "005930", 10, None, "3")
    e.place(a, "SELL", "005930", 6, 75_000, "0")  # resting
    with pytest.raises(SimError) as exc:
        e.place(a, "SELL", "005930", 5, None, "3")  # 10 held - 6 resting = 4 sellable
    assert "매도가능수량" in str(exc.value)
    with pytest.raises(SimError, match="주문가능금액"):
        e.place(a, "BUY", "005930", 200, None, "3")
    with pytest.raises(SimError, match="호가단위"):
        e.place(a, "BUY", "005930", 1, 70_050, "0")
    _lower, upper = price_limits(70_000)
    with pytest.raises(SimError, match="가격제한폭"):
        e.place(a, "BUY", "005930", 1, upper + 100, "0")


def test_partial_cancels_add_up_and_free_what_they_cancel() -> None:
    e = engine()
    a = e.accounts["11111111"]
    order = e.place(a, "BUY", "005930", 10, 60_000, "0")  # resting below the market
    free = e.orderable_cash(a)
    first = e.cancel(a, order.order_no, "005930", 4)
    assert first.quantity == 4 and order.remaining == 6 and order.status is OrderStatus.OPEN
    assert e.orderable_cash(a) > free
    rest = e.cancel(a, order.order_no, "005930")  # "all": what is left, not the original 10
    assert rest.quantity == 6 and order.remaining == 0 and order.status is OrderStatus.CANCELLED
    assert e.orderable_cash(a) == a.cash
    with pytest.raises(SimError):
        e.cancel(a, order.order_no, "005930")


def test_modify_moves_shares_to_a_new_price_under_a_new_number() -> None:
    e = engine()
    a = e.accounts["11111111"]
    order = e.place(a, "BUY", "005930", 10, 60_000, "0")  # resting below the market (70,000)
    part = e.modify(a, order.order_no, "005930", 4, 61_000)
    assert part.order_no != order.order_no and part.orig_order_no == order.order_no
    assert (order.remaining, part.remaining, part.price) == (6, 4, 61_000)
    assert order.status is OrderStatus.OPEN and part.status is OrderStatus.OPEN
    # The rest moves above the market: it fills at once; the original ends with nothing left.
    rest = e.modify(a, order.order_no, "005930", 0, 71_000)
    assert order.status is OrderStatus.CANCELLED and order.remaining == 0
    assert rest.quantity == 6 and rest.status is OrderStatus.FILLED
    with pytest.raises(SimError, match="정정할 수 있는"):
        e.modify(a, order.order_no, "005930", 0, 62_000)
    with pytest.raises(SimError, match="정정가능수량"):
        e.modify(a, part.order_no, "005930", 5, 62_000)
    with pytest.raises(SimError, match="호가단위"):
        e.modify(a, part.order_no, "005930", 0, 62_050)
    market = e.place(a, "SELL", "005930", 1, None, "3")
    with pytest.raises(SimError):
        e.modify(a, market.order_no, "005930", 0, 70_000)
    # Cash: the modified buy reserves at its new price, and a modify beyond the cash is refused.
    reserved = a.cash - e.orderable_cash(a)
    # 4 x 61,000 = 244,000 plus the buy fee 244,000 x 15 // 100,000 = 36 (36.6 truncated): 244,036.
    assert reserved == 244_036
    with pytest.raises(SimError, match="주문가능금액"):
        e.place(a, "BUY", "005930", 1_000, 60_000, "0")


def test_replayed_bars_drive_the_day() -> None:
    """A bar per day: the stock opens at the open, passes the low and the high, closes at the close; the next
    day's limits come from that close; a day without a bar is random again."""
    from datetime import date, timedelta

    e = engine(datetime(2026, 11, 23, 8, 0, tzinfo=KST))
    e.load_bars([(date(2026, 11, 23), "005930", 70_000, 73_000, 68_000, 72_000),
                 (date(2026, 11, 24), "005930", 71_500, 72_000, 65_000, 66_000)])  # fmt: skip
    s = e.stocks["005930"]
    seen: list[int] = []
    e.advance(3600)  # 09:00
    assert s.price == 70_000
    while e.now() < datetime(2026, 11, 23, 15, 30, tzinfo=KST):
        e.advance(600)
        seen.append(s.price)
    assert s.close == 72_000 and (s.low, s.high) == (68_000, 73_000) and min(seen) == 68_000
    assert seen.index(68_000) < seen.index(73_000)  # an up day dips first
    e.set_time(datetime(2026, 11, 24, 9, 0, tzinfo=KST))
    assert s.prev_close == 72_000 and s.price == 71_500
    e.set_time(datetime(2026, 11, 24, 15, 30, tzinfo=KST))
    assert (s.close, s.low, s.high) == (66_000, 65_000, 72_000)
    with pytest.raises(ValueError, match="must contain"):
        e.load_bars([(date(2026, 11, 25), "005930", 70_000, 69_000, 68_000, 68_500)])
    e.set_time(datetime.combine(date(2026, 11, 25), datetime.min.time(), tzinfo=KST) + timedelta(hours=10))
    assert s.prev_close == 66_000  # no bar: the random walk goes on from the last close


def test_after_hours_close_fills_partly_at_the_close_and_orders_expire() -> None:
    """After-hours at close: accepted 15:30-16:00, matched at 16:00 at the day's close; the rest expires."""
    e = engine(datetime(2026, 11, 24, 15, 10, tzinfo=KST), after_hours_fill_rate=0.5)
    a = e.accounts["11111111"]
    with pytest.raises(SimError):
        e.place(a, "BUY", "005930", 10, None, "81")  # before the close: not yet
    e.set_time(datetime(2026, 11, 24, 15, 45, tzinfo=KST))
    close = e.stocks["005930"].close
    assert close is not None
    o = e.place(a, "BUY", "005930", 10, None, "81")
    e.set_time(datetime(2026, 11, 24, 16, 1, tzinfo=KST))
    assert o.status is OrderStatus.EXPIRED and 0 < o.filled_quantity < 10
    assert all(f.price == close for f in o.fills)


def test_day_end_expiry_and_next_day_open_gap() -> None:
    e = engine()
    a = e.accounts["11111111"]
    limit = e.place(a, "BUY", "005930", 1, 50_000, "0")
    e.set_time(datetime(2026, 11, 25, 8, 50, tzinfo=KST))
    assert limit.status is OrderStatus.EXPIRED
    queued = e.place(a, "BUY", "005930", 1, None, "3")  # before the open: fills at the opening price
    assert queued.status is OrderStatus.OPEN
    e.set_time(datetime(2026, 11, 25, 9, 0, tzinfo=KST))
    assert queued.status is OrderStatus.FILLED and queued.fills[0].price == e.stocks["005930"].open


def test_prices_stay_on_ticks_and_within_limits() -> None:
    e = engine(volatility=0.05, jump_probability=0.2)
    e.set_time(datetime(2026, 11, 24, 15, 20, tzinfo=KST))
    s = e.stocks["005930"]
    lower, upper = price_limits(70_000)
    assert lower <= s.low <= s.high <= upper


def test_tokens_expire_and_wrong_keys_refused() -> None:
    e = engine()
    k = e.add_appkey("11111111")
    with pytest.raises(SimError) as exc:
        e.issue_token(k.appkey, "wrong")
    assert exc.value.code == 8002
    t = e.issue_token(k.appkey, k.secretkey)
    assert e.account_for_token(t.value).account_no == "11111111"
    e.expire_token(t.value)
    with pytest.raises(SimError) as exc:
        e.account_for_token(t.value)
    assert exc.value.code == 8005


orders = st.lists(
    st.tuples(
        st.sampled_from(["BUY", "SELL"]),
        st.integers(1, 60),
        st.sampled_from(["3", "0"]),
        st.integers(-20, 20),
        st.integers(0, 3),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(orders, st.integers(0, 1000))
def test_invariants_under_random_orders(seq: list[tuple[str, int, str, int, int]], seed: int) -> None:
    """Cash and holdings never negative, fills never exceed orders, fees and tax add up (with orders
    modified and partly cancelled along the way)."""
    e = MarketEngine(seed, start=DAY, volatility=0.01)
    e.add_stock("005930", "삼성전자", 70_000)
    e.add_account("11111111", "홍길동", 3_000_000)
    a = e.accounts["11111111"]
    start_cash = a.cash
    for side, qty, tt, ticks, minutes in seq:
        price = 70_000 + ticks * 100 if tt == "0" else None
        with contextlib.suppress(SimError):
            placed = e.place(a, side, "005930", qty, price, tt)
            if tt == "0" and minutes % 3 == 0:  # now and then, move part of a resting order
                e.modify(a, placed.order_no, "005930", max(1, qty // 2), price - 100 * (minutes % 5))  # type: ignore[operator]
            elif tt == "0" and minutes % 3 == 1:
                e.cancel(a, placed.order_no, "005930", max(1, qty // 3))
        e.advance(minutes * 60)
        assert a.cash >= 0
        assert all(p.quantity >= 0 for p in a.holdings.values())
    fills = [(o, f) for o in e.orders.values() for f in o.fills]
    for o in e.orders.values():
        assert o.filled_quantity + o.cancelled_quantity <= o.quantity
    bought = sum(f.quantity * f.price + f.fee for o, f in fills if o.side == "BUY")
    sold = sum(f.quantity * f.price - f.fee - f.tax for o, f in fills if o.side == "SELL")
    assert a.cash == start_cash - bought + sold
    net = sum(f.quantity for o, f in fills if o.side == "BUY") - sum(
        f.quantity for o, f in fills if o.side == "SELL"
    )
    assert (a.holdings["005930"].quantity if "005930" in a.holdings else 0) == net
    for o, f in fills:  # 0.015 % of the fill's amount, truncated; the 0.20 % tax on sells only
        assert f.fee == f.quantity * f.price * 15 // 100_000
        assert f.tax == (f.quantity * f.price * 20 // 10_000 if o.side == "SELL" else 0)
