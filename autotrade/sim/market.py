"""The market engine behind the simulator (no HTTP).

Prices follow a seeded random walk with occasional jumps and overnight gaps, on valid KRX ticks and within
the ±30% limits of the previous close. Orders are matched by the session rules:

- market orders in the continuous session fill at once at the current price; those placed before the open
  (08:30-09:00) fill at the opening price; a sell larger than what is held net of resting sells, or a buy
  beyond the orderable cash, is rejected;
- limit orders rest and fill when the price reaches them;
- after-hours-at-close orders (trde_tp 81) are accepted from the close until 16:00 and matched at 16:00
  at today's close; only a seeded fraction of each finds opposing orders (``after_hours_fill_rate``), so a
  buy there may fill partly or not at all;
- every order is a day order: at 18:00 whatever is still open expires.

A virtual clock drives everything: ``advance_to`` moves time forward in steps, moving prices during the
continuous session and applying every session boundary it crosses (open, close, after-hours match, expiry,
the next trading day's gap). Money is integer KRW; fees and the sell tax come from the domain's CostRates.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from autotrade.domain.calendar import hours_of, is_trading_day
from autotrade.domain.krx import (
    KST,
    CostRates,
    SessionTimes,
    ceil_to_tick,
    floor_to_tick,
    is_valid_tick,
    price_limits,
)


class SimError(Exception):
    """A request the broker refuses: ``code`` is Kiwoom's detailed code, ``category`` the return_code."""

    def __init__(self, message: str, code: int, category: int = 2) -> None:
        super().__init__(message)
        self.code = code
        self.category = category


class OrderStatus(StrEnum):
    OPEN = "OPEN"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


MARKET_TYPES = frozenset({"3", "13", "23", "6", "16", "26", "7"})
LIMIT_TYPES = frozenset({"0", "10", "20", "5"})
STOP_LIMIT = "28"  # 스톱지정가: waits for its trigger (cond_uv), then works as a limit order at ord_uv
PRICED_TYPES = LIMIT_TYPES | {STOP_LIMIT}
AFTER_HOURS_CLOSE = "81"
PRE_MARKET = "61"
TRADE_TYPE_TEXT = {
    "0": "보통",
    "3": "시장가",
    "5": "조건부지정가",
    "6": "최유리지정가",
    "28": "스톱지정가",
    "61": "장시작전시간외",
    "62": "시간외단일가",
    "81": "장마감후시간외",
}


@dataclass(slots=True)
class Stock:
    code: str
    name: str
    prev_close: int
    price: int
    open: int = 0
    high: int = 0
    low: int = 0
    volume: int = 0
    close: int | None = None  # today's close, once the market closed
    drift: float = 0.0


@dataclass(slots=True)
class Position:
    quantity: int = 0
    cost: int = 0  # purchase amount of the shares held (for the average price)

    @property
    def avg_price(self) -> int:
        return (2 * self.cost + self.quantity) // (2 * self.quantity) if self.quantity else 0


@dataclass(slots=True)
class Account:
    account_no: str
    name: str
    cash: int
    holdings: dict[str, Position] = field(default_factory=dict)
    today_fee: int = 0
    today_tax: int = 0


@dataclass(slots=True)
class Fill:
    fill_no: int
    quantity: int
    price: int
    at: datetime
    fee: int
    tax: int


@dataclass(slots=True)
class Order:
    order_no: str
    account_no: str
    code: str
    side: str  # "BUY" or "SELL"
    quantity: int
    price: int | None
    trade_type: str
    placed_at: datetime
    trading_day: date
    status: OrderStatus = OrderStatus.OPEN
    fills: list[Fill] = field(default_factory=list)
    orig_order_no: str = ""
    cancelled_quantity: int = 0
    is_record: bool = False  # a cancel's record (kt10003's own order number), never a live order
    stop_price: int | None = None  # trde_tp 28: the trigger (cond_uv)
    triggered: bool = False  # trde_tp 28: the trigger was reached; the order now works as a limit

    @property
    def filled_quantity(self) -> int:
        return sum(f.quantity for f in self.fills)

    @property
    def filled_amount(self) -> int:
        return sum(f.quantity * f.price for f in self.fills)

    @property
    def remaining(self) -> int:
        if self.status is not OrderStatus.OPEN:
            return 0
        return self.quantity - self.filled_quantity - self.cancelled_quantity

    @property
    def avg_fill_price(self) -> int:
        q = self.filled_quantity
        return (2 * self.filled_amount + q) // (2 * q) if q else 0


@dataclass(slots=True)
class AppKey:
    appkey: str
    secretkey: str
    account_no: str


@dataclass(slots=True)
class Token:
    value: str
    appkey: str
    expires_at: datetime


PriceListener = Callable[[Stock, int, datetime], None]
OrderListener = Callable[[Order, Fill | None], None]


class MarketEngine:
    def __init__(
        self,
        seed: int = 1,
        *,
        start: datetime | None = None,
        speed: float = 0.0,
        costs: CostRates | None = None,
        step_seconds: float = 60.0,
        volatility: float = 0.004,
        jump_probability: float = 0.002,
        gap_volatility: float = 0.02,
        after_hours_fill_rate: float = 0.8,
        token_lifetime: timedelta = timedelta(hours=24),
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        import time as _time

        self.rng = random.Random(seed)
        self.costs = costs or CostRates()
        self.step = timedelta(seconds=step_seconds)
        self.volatility = volatility
        self.jump_probability = jump_probability
        self.gap_volatility = gap_volatility
        self.after_hours_fill_rate = after_hours_fill_rate
        self.token_lifetime = token_lifetime
        self._wall = wall_clock or _time.monotonic
        self._virtual = start or datetime.now(KST)
        self._anchor = self._wall()
        self.speed = speed
        self.stop_at: datetime | None = None  # a running clock stops here
        # Replayed daily bars: (day, code) -> (open, high, low, close); those stocks follow them that day.
        self.bars: dict[tuple[date, str], tuple[int, int, int, int]] = {}
        self.stocks: dict[str, Stock] = {}
        self.accounts: dict[str, Account] = {}
        self.appkeys: dict[str, AppKey] = {}
        self.tokens: dict[str, Token] = {}
        self.orders: dict[str, Order] = {}
        self._open: dict[str, Order] = {}  # candidates: placed orders not yet seen ended
        self._open_by_account: dict[str, dict[str, Order]] = {}
        self._next_order = 1
        self._next_fill = 1
        self.price_listeners: list[PriceListener] = []
        self.order_listeners: list[OrderListener] = []
        self._day = self._virtual.astimezone(KST).date()

    # --- clock ---

    def now(self) -> datetime:
        if self.speed > 0:
            wall = self._wall()
            target = self._running_target(wall)
            self._anchor = wall
            self._advance(target)
            if self.stop_at is not None and target >= self.stop_at:
                self.speed, self.stop_at = 0.0, None
        return self._virtual

    def read_clock(self) -> datetime:
        """The virtual time now, without moving the market (safe to call from another thread: the
        simulator's own loop applies the steps)."""
        if self.speed > 0:
            return self._running_target(self._wall())
        return self._virtual

    def _running_target(self, wall: float) -> datetime:
        target = self._virtual + timedelta(seconds=(wall - self._anchor) * self.speed)
        return target if self.stop_at is None else min(target, self.stop_at)

    def set_speed(self, speed: float, stop_at: datetime | None = None) -> None:
        """Run the clock at ``speed`` times wall time (0 stops it), until ``stop_at`` if given."""
        self.now()
        if stop_at is not None and stop_at.tzinfo is None:
            raise ValueError("time must be timezone-aware")
        self._anchor = self._wall()
        self.speed = max(speed, 0.0)
        self.stop_at = stop_at if self.speed > 0 else None

    def set_time(self, moment: datetime) -> None:
        """Jump the clock. Forward jumps apply the session boundaries on the way; backwards is refused."""
        if moment.tzinfo is None:
            raise ValueError("time must be timezone-aware")
        if moment < self._virtual:
            raise ValueError("the virtual clock does not run backwards")
        self._advance(moment)
        self._anchor = self._wall()

    def advance(self, seconds: float) -> datetime:
        self.set_time(self._virtual + timedelta(seconds=seconds))
        return self._virtual

    def _advance(self, target: datetime) -> None:
        while self._virtual < target:
            nxt = min(target, self._next_event(self._virtual))
            self._virtual = nxt
            self._on_time(nxt)

    def _next_event(self, now: datetime) -> datetime:
        local = now.astimezone(KST)
        day = local.date()
        boundaries: list[datetime] = []
        if is_trading_day(day):
            h = hours_of(day)
            for t in (
                h.open,
                h.closing_auction_start,
                h.close,
                h.after_hours_close_end,
                h.after_hours_single_end,
            ):
                boundaries.append(datetime.combine(day, t, tzinfo=KST))
            if (
                datetime.combine(day, h.open, tzinfo=KST)
                <= local
                < datetime.combine(day, h.closing_auction_start, tzinfo=KST)
            ):
                boundaries.append(now + self.step)
        boundaries.append(datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=KST))
        return min(b for b in boundaries if b > now)

    def _on_time(self, now: datetime) -> None:
        local = now.astimezone(KST)
        day = local.date()
        if day != self._day:
            self._roll_day(day)
        if not is_trading_day(day):
            return
        h = hours_of(day)
        t = local.time()
        if t == h.open:
            self._open_market(now)
        elif h.open < t < h.closing_auction_start:
            self._step_prices(now)
        elif t == h.close:
            self._closing_auction(now, h)
        elif t == h.after_hours_close_end:
            self._match_after_hours(now)
        elif t == h.after_hours_single_end:
            self._expire_orders(now)

    def _roll_day(self, day: date) -> None:
        self._expire_orders(datetime.combine(self._day, time(23, 59), tzinfo=KST))
        for s in self.stocks.values():
            if s.close is not None:
                s.prev_close = s.close
            s.close = None
            s.open = s.high = s.low = 0
            s.volume = 0
        for a in self.accounts.values():
            a.today_fee = a.today_tax = 0
        self._day = day

    # --- prices ---

    def load_bars(self, rows: Iterable[tuple[date, str, int, int, int, int]]) -> int:
        """Replay daily bars (day, code, open, high, low, close): on a day with a bar the stock opens at the
        open, walks open -> low -> high -> close (open -> high -> low -> close on a down day) through the
        session and closes at the close; other days stay random. Returns the number of bars."""
        n = 0
        for day, code, o, h, lo, c in rows:
            self._stock(code)
            if not (lo <= min(o, c) and max(o, c) <= h and lo > 0):
                raise ValueError(f"bar {day} {code}: low {lo}, high {h} must contain open {o}, close {c}")
            self.bars[(day, code)] = (o, h, lo, c)
            n += 1
        return n

    def _bar_price(self, s: Stock, now: datetime) -> int | None:
        local = now.astimezone(KST)
        bar = self.bars.get((local.date(), s.code))
        if bar is None:
            return None
        o, h, lo, c = bar
        hours = hours_of(local.date())
        start = datetime.combine(local.date(), hours.open, tzinfo=KST)
        end = datetime.combine(local.date(), hours.close, tzinfo=KST)
        f = min(max((now - start) / (end - start), 0.0), 1.0)
        path = (o, lo, h, c) if c >= o else (o, h, lo, c)
        leg = min(int(f * 3), 2)
        a, b = path[leg], path[leg + 1]
        return round(a + (b - a) * (f * 3 - leg))

    def _open_market(self, now: datetime) -> None:
        for s in self.stocks.values():
            replayed = self._bar_price(s, now)
            if replayed is not None:
                self._set_price(s, replayed, now)
            else:
                gap = self.rng.gauss(0, self.gap_volatility)
                self._set_price(s, int(s.prev_close * (1 + gap)), now)
            s.open = s.high = s.low = s.price
        self._fill_collected(now)
        self._match_limits(now)

    def _fill_collected(self, now: datetime, since: datetime | None = None) -> None:
        """The market orders an auction collected (the opening's; the closing's, placed from ``since``)
        trade at its price, in the order they came."""
        for order in sorted(self._open_orders(), key=lambda o: o.order_no):
            if order.trade_type in MARKET_TYPES and (since is None or order.placed_at >= since):
                self._fill(order, order.remaining, self.stocks[order.code].price, now)

    def _step_prices(self, now: datetime) -> None:
        for s in self.stocks.values():
            replayed = self._bar_price(s, now)
            if replayed is not None:
                self._set_price(s, replayed, now)
                continue
            move = self.rng.gauss(s.drift, self.volatility)
            if self.rng.random() < self.jump_probability:
                move += self.rng.choice((-1, 1)) * self.rng.uniform(0.03, 0.08)
            self._set_price(s, int(s.price * (1 + move)), now)
        self._match_limits(now)

    def _closing_auction(self, now: datetime, h: SessionTimes) -> None:
        """15:30: the single price of the closing auction. No trade prints from 15:20 (the price rests where
        the continuous session left it); the close moves as far as the auction's steps would have, and
        every order collected in the auction trades at it."""
        auction = datetime.combine(now.astimezone(KST).date(), h.closing_auction_start, tzinfo=KST)
        steps = max((now - auction) / self.step, 1.0)
        for s in self.stocks.values():
            replayed = self._bar_price(s, now)
            if replayed is not None:
                self._set_price(s, replayed, now)
            elif self.volatility > 0 or s.drift:
                move = self.rng.gauss(s.drift * steps, self.volatility * steps**0.5)
                self._set_price(s, int(s.price * (1 + move)), now)
            s.close = s.price
        self._fill_collected(now, since=auction)
        self._match_limits(now, at_close=True)

    def set_price(self, code: str, price: int) -> None:
        """Admin: put a stock at ``price`` now (snapped to a tick and the day's limits)."""
        stock = self._stock(code)
        self._set_price(stock, price, self.now())
        self._match_limits(self._virtual)

    def _set_price(self, s: Stock, raw: int, now: datetime) -> None:
        lower, upper = price_limits(s.prev_close)
        snapped = floor_to_tick(max(raw, 1)) if raw >= s.price else ceil_to_tick(max(raw, 1))
        s.price = min(max(snapped, lower), upper)
        s.high = max(s.high or s.price, s.price)
        s.low = min(s.low or s.price, s.price)
        s.volume += self.rng.randint(1, 50) * 10
        for listener in list(self.price_listeners):
            listener(s, s.price, now)

    # --- reference data ---

    def add_stock(self, code: str, name: str, prev_close: int, drift: float = 0.0) -> Stock:
        if len(code) != 6:
            raise ValueError("stock code must be six characters")
        if not is_valid_tick(prev_close):
            prev_close = floor_to_tick(prev_close)
        stock = Stock(code, name, prev_close, prev_close, drift=drift)
        self.stocks[code] = stock
        return stock

    def add_account(self, account_no: str, name: str, cash: int) -> Account:
        if account_no in self.accounts:
            raise ValueError(f"account {account_no} exists")
        acct = Account(account_no, name, cash)
        self.accounts[account_no] = acct
        return acct

    def add_appkey(self, account_no: str, appkey: str | None = None, secretkey: str | None = None) -> AppKey:
        if account_no not in self.accounts:
            raise ValueError(f"no account {account_no}")
        key = AppKey(appkey or "PS" + secrets.token_hex(16), secretkey or secrets.token_hex(32), account_no)
        self.appkeys[key.appkey] = key
        return key

    # --- tokens ---

    def issue_token(self, appkey: str, secretkey: str) -> Token:
        key = self.appkeys.get(appkey)
        if key is None:
            raise SimError("유효하지 않은 앱키입니다", 8001, 3)
        if not secrets.compare_digest(key.secretkey, secretkey):
            raise SimError("유효하지 않은 시크릿키입니다", 8002, 3)
        token = Token(secrets.token_urlsafe(48), appkey, self.now() + self.token_lifetime)
        self.tokens[token.value] = token
        return token

    def revoke_token(self, appkey: str, secretkey: str, token: str) -> None:
        key = self.appkeys.get(appkey)
        if key is None or not secrets.compare_digest(key.secretkey, secretkey):
            raise SimError("유효하지 않은 앱키입니다", 8001, 3)
        found = self.tokens.get(token)
        if found is None or found.appkey != appkey:
            raise SimError("Token이 유효하지 않습니다", 8005, 3)
        del self.tokens[token]

    def account_for_token(self, token: str) -> Account:
        found = self.tokens.get(token)
        if found is None or found.expires_at <= self.now():
            raise SimError("Token이 유효하지 않습니다", 8005, 3)
        return self.accounts[self.appkeys[found.appkey].account_no]

    def expire_token(self, token: str) -> None:
        if token in self.tokens:
            self.tokens[token].expires_at = self._virtual

    # --- orders ---

    def place(
        self,
        account: Account,
        side: str,
        code: str,
        quantity: int,
        price: int | None,
        trade_type: str,
        stop_price: int | None = None,
    ) -> Order:
        now = self.now()
        stock = self._stock(code)
        day = now.astimezone(KST).date()
        if quantity <= 0:
            raise SimError("주문수량을 확인하세요", 1517, 2)
        if not is_trading_day(day):
            raise SimError("휴장일에는 주문할 수 없습니다", 2000, 2)
        window = self._order_window(trade_type, now)
        if trade_type in PRICED_TYPES:
            self._check_price(stock, price)
        if trade_type == STOP_LIMIT:
            self._check_price(stock, stop_price, what="감시가격")
        if side == "BUY":
            reference = price if trade_type in PRICED_TYPES and price else stock.price
            needed = self.costs.buy_cost(reference * quantity)
            if needed > self.orderable_cash(account):
                raise SimError("주문가능금액이 부족합니다", 2000, 2)
        else:
            if quantity > self.sellable(account, code):
                raise SimError("매도가능수량이 부족합니다", 2000, 2)
        order = Order(
            order_no=f"{self._next_order:07d}",
            account_no=account.account_no,
            code=code,
            side=side,
            quantity=quantity,
            price=price if trade_type in PRICED_TYPES else None,
            trade_type=trade_type,
            placed_at=now,
            trading_day=day,
            stop_price=stop_price if trade_type == STOP_LIMIT else None,
        )
        self._next_order += 1
        self.orders[order.order_no] = order
        self._open[order.order_no] = order
        self._open_by_account.setdefault(order.account_no, {})[order.order_no] = order
        self._notify(order, None)
        if window == "now":
            if trade_type in MARKET_TYPES:
                self._fill(order, quantity, stock.price, now)
            elif trade_type in PRICED_TYPES:
                self._match_limits(now)
        return order

    @staticmethod
    def _check_price(stock: Stock, price: int | None, what: str = "주문가격") -> None:
        if price is None or not is_valid_tick(price):
            raise SimError(f"{what}이 호가단위에 맞지 않습니다", 2000, 2)
        lower, upper = price_limits(stock.prev_close)
        if not lower <= price <= upper:
            raise SimError(f"{what}이 가격제한폭을 벗어났습니다", 2000, 2)

    def _order_window(self, trade_type: str, now: datetime) -> str:
        local = now.astimezone(KST)
        h = hours_of(local.date())
        t = local.time()
        if trade_type == AFTER_HOURS_CLOSE:
            if h.close <= t < h.after_hours_close_end:
                return "queued"
            raise SimError("장마감후시간외 주문 가능 시간이 아닙니다", 2000, 2)
        if trade_type == PRE_MARKET:
            raise SimError("모의투자에서는 지원하지 않는 주문유형입니다", 8104, 20)
        if time(8, 30) <= t < h.open:
            return "queued"
        if h.open <= t < h.closing_auction_start:
            return "now"
        if h.closing_auction_start <= t < h.close:
            return "queued"  # the closing auction: matched at the close's single price
        raise SimError("장 운영시간이 아닙니다", 2000, 2)

    def cancel(self, account: Account, orig_order_no: str, code: str, quantity: int = 0) -> Order:
        orig = self.orders.get(orig_order_no)
        if orig is None or orig.account_no != account.account_no or orig.code != code:
            raise SimError("원주문번호가 존재하지 않습니다", 2000, 2)
        if orig.status is not OrderStatus.OPEN:
            raise SimError("취소할 수 있는 주문이 아닙니다", 2000, 2)
        remaining = orig.quantity - orig.filled_quantity - orig.cancelled_quantity
        qty = remaining if quantity == 0 else min(quantity, remaining)
        now = self.now()
        record = Order(
            order_no=f"{self._next_order:07d}",
            account_no=account.account_no,
            code=code,
            side=orig.side,
            quantity=qty,
            price=None,
            trade_type=orig.trade_type,
            placed_at=now,
            trading_day=orig.trading_day,
            status=OrderStatus.CANCELLED,
            orig_order_no=orig.order_no,
            is_record=True,
        )
        self._next_order += 1
        self.orders[record.order_no] = record
        orig.cancelled_quantity += qty
        if orig.cancelled_quantity + orig.filled_quantity >= orig.quantity:
            orig.status = OrderStatus.CANCELLED
        self._notify(orig, None)
        return record

    def modify(
        self,
        account: Account,
        orig_order_no: str,
        code: str,
        quantity: int,
        price: int,
        stop_price: int | None = None,
    ) -> Order:
        """kt10002: move ``quantity`` open shares of a limit order (0: all that remain) to a new price under
        a new order number; the original keeps the rest (it ends when nothing remains). A stop-limit order
        (28) may also move its trigger (``stop_price``; None keeps it); an untriggered one stays waiting."""
        orig = self.orders.get(orig_order_no)
        if orig is None or orig.is_record or orig.account_no != account.account_no or orig.code != code:
            raise SimError("원주문번호가 존재하지 않습니다", 2000, 2)
        if orig.status is not OrderStatus.OPEN:
            raise SimError("정정할 수 있는 주문이 아닙니다", 2000, 2)
        if orig.trade_type not in PRICED_TYPES:
            raise SimError("지정가 주문만 정정할 수 있습니다", 2000, 2)
        remaining = orig.remaining
        qty = remaining if quantity == 0 else quantity
        if not 0 < qty <= remaining:
            raise SimError("정정가능수량을 초과하였습니다", 2000, 2)
        stock = self._stock(code)
        self._check_price(stock, price)
        stop = None
        if orig.trade_type == STOP_LIMIT:
            stop = orig.stop_price if stop_price is None else stop_price
            self._check_price(stock, stop, what="감시가격")
        now = self.now()
        window = self._order_window(orig.trade_type, now)
        if orig.side == "BUY":
            released = self.costs.buy_cost((orig.price or stock.price) * qty)
            if self.costs.buy_cost(price * qty) > self.orderable_cash(account) + released:
                raise SimError("주문가능금액이 부족합니다", 2000, 2)
        orig.cancelled_quantity += qty
        if orig.remaining == 0:
            orig.status = OrderStatus.CANCELLED
        order = Order(
            order_no=f"{self._next_order:07d}", account_no=account.account_no, code=code, side=orig.side,
            quantity=qty, price=price, trade_type=orig.trade_type, placed_at=now,
            trading_day=orig.trading_day, orig_order_no=orig.order_no, stop_price=stop,
            triggered=orig.triggered,
        )  # fmt: skip
        self._next_order += 1
        self.orders[order.order_no] = order
        self._open[order.order_no] = order
        self._open_by_account.setdefault(order.account_no, {})[order.order_no] = order
        self._notify(orig, None)
        self._notify(order, None)
        if window == "now":
            self._match_limits(now)
        return order

    def orderable_cash(self, account: Account) -> int:
        reserved = sum(
            self.costs.buy_cost(
                (o.price or self.stocks[o.code].price)
                * (o.quantity - o.filled_quantity - o.cancelled_quantity)
            )
            for o in self._open_orders(account.account_no)
            if o.side == "BUY"
        )
        return account.cash - reserved

    def sellable(self, account: Account, code: str) -> int:
        held = account.holdings.get(code, Position()).quantity
        resting = sum(
            o.quantity - o.filled_quantity - o.cancelled_quantity
            for o in self._open_orders(account.account_no)
            if o.side == "SELL" and o.code == code
        )
        return held - resting

    def _open_orders(self, account_no: str | None = None) -> list[Order]:
        """Orders still open (of one account), from an index pruned as orders end: the whole order history
        is never scanned, so a long session does not slow every order down."""
        index = self._open if account_no is None else self._open_by_account.get(account_no, {})
        found = [o for o in index.values() if o.status is OrderStatus.OPEN]
        if len(found) < len(index):
            for o in list(index.values()):
                if o.status is not OrderStatus.OPEN:
                    index.pop(o.order_no, None)
        return found

    def _match_limits(self, now: datetime, at_close: bool = False) -> None:
        local = now.astimezone(KST)
        h = hours_of(local.date())
        # Stops watch trades: the continuous session's, and the closing auction's single print.
        in_session = h.open <= local.time() < h.closing_auction_start or at_close
        if h.closing_auction_start <= local.time() < h.close:
            return  # orders are collected, not matched, until the close
        for order in self._open_orders():
            if order.trade_type not in PRICED_TYPES or order.price is None:
                continue
            price = self.stocks[order.code].price
            fill_at = order.price
            if order.trade_type == STOP_LIMIT and not order.triggered:
                stop = order.stop_price or 0
                # A stop is watched on trades only (the continuous session); queued before the open, it is
                # first checked against the opening price.
                if not in_session or not (price >= stop if order.side == "BUY" else price <= stop):
                    continue
                order.triggered = True
                fill_at = price  # on triggering, a marketable limit trades at the market, not at its limit
            crosses = price <= order.price if order.side == "BUY" else price >= order.price
            if crosses:
                self._fill(
                    order, order.quantity - order.filled_quantity - order.cancelled_quantity, fill_at, now
                )

    def _match_after_hours(self, now: datetime) -> None:
        for order in sorted(self._open_orders(), key=lambda o: o.order_no):
            if order.trade_type != AFTER_HOURS_CLOSE:
                continue
            stock = self.stocks[order.code]
            close = stock.close or stock.price
            remaining = order.quantity - order.filled_quantity - order.cancelled_quantity
            qty = min(remaining, int(remaining * self.after_hours_fill_rate + self.rng.random()))
            if qty > 0:
                self._fill(order, qty, close, now)
            if order.status is OrderStatus.OPEN:
                order.status = OrderStatus.EXPIRED
                self._notify(order, None)

    def _expire_orders(self, now: datetime) -> None:
        for order in self._open_orders():
            order.status = OrderStatus.EXPIRED
            self._notify(order, None)

    def _fill(self, order: Order, quantity: int, price: int, now: datetime) -> None:
        account = self.accounts[order.account_no]
        if order.side == "BUY":
            affordable = quantity
            while affordable > 0 and self.costs.buy_cost(affordable * price) > account.cash:
                affordable -= 1
            quantity = affordable
        else:
            quantity = min(quantity, account.holdings.get(order.code, Position()).quantity)
        if quantity <= 0:
            order.status = OrderStatus.EXPIRED
            self._notify(order, None)
            return
        amount = quantity * price
        fee = self.costs.fee(amount)
        tax = self.costs.sell_tax(amount) if order.side == "SELL" else 0
        pos = account.holdings.setdefault(order.code, Position())
        if order.side == "BUY":
            account.cash -= amount + fee
            pos.quantity += quantity
            pos.cost += amount
        else:
            pos.cost -= pos.avg_price * quantity if quantity < pos.quantity else pos.cost
            pos.quantity -= quantity
            account.cash += amount - fee - tax
            if pos.quantity == 0:
                del account.holdings[order.code]
        account.today_fee += fee
        account.today_tax += tax
        fill = Fill(self._next_fill, quantity, price, now, fee, tax)
        self._next_fill += 1
        order.fills.append(fill)
        if order.filled_quantity + order.cancelled_quantity >= order.quantity:
            order.status = OrderStatus.FILLED
        self._notify(order, fill)

    def _notify(self, order: Order, fill: Fill | None) -> None:
        for listener in list(self.order_listeners):
            listener(order, fill)

    def _stock(self, code: str) -> Stock:
        stock = self.stocks.get(code)
        if stock is None:
            raise SimError("종목코드가 존재하지 않습니다", 1902, 2)
        return stock

    def orders_of(self, account: Account, day: date | None = None) -> list[Order]:
        d = day or self.now().astimezone(KST).date()
        return [o for o in self.orders.values() if o.account_no == account.account_no and o.trading_day == d]
