"""The backtest's day loop: exits on the morning's positions, then the evening's buys, then the books.

One :class:`Simulation` holds the account (cash, open positions, every fill). Each trading day it

1. replays the day's prices through every open position's live :class:`ExitStrategy`
   (:func:`autotrade.backtest.fills.replay_day`), sells at the close what reached ``max_holding_days``,
   and ends the day for the state machine (``DayEnd``);
2. sizes the day's scan with the live :func:`autotrade.domain.risk.plan_buys` against the cash left and the
   positions still held, and buys at the scan day's close;
3. marks the account to the day's closes (the last close for a stock without a bar).

The loop reads bars through :class:`DayBars`, so the indexed engine (:func:`run_backtest`) and the plain
reference loop (:mod:`autotrade.backtest.reference`) differ only in how they find a bar.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol

from autotrade.backtest.config import BacktestConfig
from autotrade.backtest.data import CALENDAR_XKRX, MarketData
from autotrade.backtest.fills import (
    Bar,
    ExitFill,
    FillBasis,
    MinuteBar,
    close_at_close,
    closed_at_upper_limit,
    replay_day,
)
from autotrade.domain import calendar
from autotrade.domain.exits import DayEnd, ExitStrategy
from autotrade.domain.krx import KST, REGULAR_SESSION_TIMES, SessionTimes
from autotrade.domain.models import ExitReason, ScanRow, Side
from autotrade.domain.risk import AccountState, plan_buys

# Reasons a scan row is not bought that only the backtester can know (the rest are SkipReason values).
NO_BAR = "NO_BAR"  # the stock has no bar on the scan day
UPPER_LIMIT_CLOSE = "UPPER_LIMIT_CLOSE"  # closed at the upper limit: an after-hours buy would not fill
OUTSIDE_BARS = "OUTSIDE_BARS"  # the scan's date is not a day of the bars' timeline


class DayBars(Protocol):
    """The market of one trading day, as the day loop sees it."""

    def bar(self, code: str) -> Bar | None: ...

    def prev_close(self, code: str) -> int | None:
        """The stock's last close before today."""
        ...

    def mark(self, code: str) -> int | None:
        """Today's close, or the last close when the stock has no bar today."""
        ...

    def minutes(self, code: str) -> Sequence[MinuteBar]: ...


@dataclass(frozen=True, slots=True)
class TradeRow:
    """One fill. ``profit_loss`` sums over a position's rows to its net result (the buy row carries -fee)."""

    trade_id: int
    position_id: int
    day: date
    code: str
    name: str
    side: Side
    reason: str  # BUY or an ExitReason
    basis: FillBasis
    quantity: int
    price: int
    amount: int
    fee: int
    tax: int
    cash_flow: int
    profit_loss: int
    score: float


@dataclass(frozen=True, slots=True)
class PositionRow:
    position_id: int
    code: str
    name: str
    score: float
    entry_day: date
    entry_price: int
    quantity: int
    buy_fee: int
    exit_day: date | None  # None: still open at the end of the data
    holding_days: int | None  # trading days from the buy to the last exit
    sold_quantity: int
    sell_amount: int
    sell_fees: int
    sell_taxes: int
    net_pnl: int  # realised: sells after fee and tax, less the buy and its fee (open: so far)
    exits: tuple[ExitReason, ...]

    @property
    def closed(self) -> bool:
        return self.exit_day is not None

    @property
    def stop_triggered(self) -> bool:
        return ExitReason.STOP_LOSS in self.exits


@dataclass(frozen=True, slots=True)
class EquityPoint:
    day: date
    cash: int
    holdings: int  # shares held x close

    @property
    def equity(self) -> int:
        return self.cash + self.holdings


@dataclass(frozen=True, slots=True)
class ScanDecision:
    """What the backtest did with one scan row: ``outcome`` is BUY or the reason it was not bought, ``detail``
    the limit that sized a buy (a LimitKind) or the skip's detail. The monthly review reads these to explain
    a buy made on one side only."""

    day: date
    code: str
    outcome: str
    detail: str = ""


@dataclass(frozen=True)
class BacktestResult:
    config: BacktestConfig
    trades: tuple[TradeRow, ...]
    positions: tuple[PositionRow, ...]
    equity: tuple[EquityPoint, ...]
    skipped: dict[str, int]
    bars: int
    stocks: int
    calendar: str
    decisions: tuple[ScanDecision, ...] = ()


@dataclass(slots=True)
class _Position:
    position_id: int
    code: str
    name: str
    score: float
    entry_index: int
    entry_day: date
    entry_price: int
    quantity: int
    buy_fee: int
    strategy: ExitStrategy
    sold_quantity: int = 0
    sell_amount: int = 0
    sell_fees: int = 0
    sell_taxes: int = 0
    exits: list[ExitReason] = field(default_factory=list)
    exit_index: int | None = None
    exit_day: date | None = None

    def row(self) -> PositionRow:
        return PositionRow(
            position_id=self.position_id,
            code=self.code,
            name=self.name,
            score=self.score,
            entry_day=self.entry_day,
            entry_price=self.entry_price,
            quantity=self.quantity,
            buy_fee=self.buy_fee,
            exit_day=self.exit_day,
            holding_days=None if self.exit_index is None else self.exit_index - self.entry_index,
            sold_quantity=self.sold_quantity,
            sell_amount=self.sell_amount,
            sell_fees=self.sell_fees,
            sell_taxes=self.sell_taxes,
            # Only the shares sold so far count; once closed that is the whole position.
            net_pnl=self.sell_amount
            - self.sell_fees
            - self.sell_taxes
            - self.entry_price * self.sold_quantity
            - self.buy_fee,
            exits=tuple(self.exits),
        )


class Simulation:
    """One account traded by the product's rules over a timeline of trading days."""

    def __init__(self, config: BacktestConfig) -> None:
        self.config = config
        self.costs = config.costs()
        self.limits = config.limits()
        self.cash = config.initial_capital
        self._open: dict[int, _Position] = {}
        self._closed: list[_Position] = []
        self._trades: list[TradeRow] = []
        self._equity: list[EquityPoint] = []
        self._skipped: dict[str, int] = {}
        self._decisions: list[ScanDecision] = []
        self._next_position = 1

    def trading_day(
        self, index: int, day: date, times: SessionTimes, bars: DayBars, scans: Sequence[ScanRow]
    ) -> None:
        at_open = datetime.combine(day, times.open, KST)
        at_close = datetime.combine(day, times.close, KST)
        closed_today = self._exits(index, day, at_open, at_close, bars)
        self._buys(index, day, bars, scans, closed_today)
        holdings = 0
        for pos in self._open.values():
            mark = bars.mark(pos.code)
            holdings += pos.strategy.held * (mark if mark is not None else pos.entry_price)
        self._equity.append(EquityPoint(day, self.cash, holdings))

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self._skipped[reason] = self._skipped.get(reason, 0) + count

    def result(self, *, bars: int, stocks: int, calendar_source: str) -> BacktestResult:
        positions = sorted([*self._closed, *self._open.values()], key=lambda p: p.position_id)
        return BacktestResult(
            config=self.config,
            trades=tuple(self._trades),
            positions=tuple(p.row() for p in positions),
            equity=tuple(self._equity),
            skipped=dict(sorted(self._skipped.items())),
            bars=bars,
            stocks=stocks,
            calendar=calendar_source,
            decisions=tuple(self._decisions),
        )

    # --- the day's steps ---

    def _exits(self, index: int, day: date, at_open: datetime, at_close: datetime, bars: DayBars) -> set[str]:
        closed_today: set[str] = set()
        max_hold = self.config.max_holding_days
        for pos in list(self._open.values()):
            bar = bars.bar(pos.code)
            if bar is None:  # no trading in the stock today: nothing can fill
                continue
            prev = bars.prev_close(pos.code)
            s = pos.strategy
            fills = replay_day(s, bar, prev_close=prev, at_open=at_open, minutes=bars.minutes(pos.code))
            if max_hold is not None and not s.is_closed and index - pos.entry_index >= max_hold:
                last = close_at_close(s, bar, prev_close=prev, at_close=at_close)
                if last is not None:
                    fills.append(last)
            for f in fills:
                self._sell(pos, f, day)
            if s.is_closed:
                pos.exit_index, pos.exit_day = index, day
                self._closed.append(self._open.pop(pos.position_id))
                closed_today.add(pos.code)
            else:
                s.apply(DayEnd(at_close))
        return closed_today

    def _buys(
        self, index: int, day: date, bars: DayBars, scans: Sequence[ScanRow], closed_today: set[str]
    ) -> None:
        if not scans:
            return
        candidates: list[ScanRow] = []
        for row in scans:
            if row.score < self.limits.min_ai_score:
                candidates.append(row)  # plan_buys records it as LOW_SCORE
                continue
            bar = bars.bar(row.code)
            if bar is None:
                self.skip(NO_BAR)
                self._decisions.append(ScanDecision(day, row.code, NO_BAR))
                continue
            if not self.config.buy_at_upper_limit_close and closed_at_upper_limit(
                bar, bars.prev_close(row.code)
            ):
                self.skip(UPPER_LIMIT_CLOSE)
                self._decisions.append(ScanDecision(day, row.code, UPPER_LIMIT_CLOSE))
                continue
            # The buy is placed in the after-hours session at today's close: size and fill at the close.
            candidates.append(ScanRow(row.code, row.name, row.score, bar.close, row.reasons))
        account = AccountState(
            cash=self.cash,
            held_codes=frozenset(p.code for p in self._open.values()),
            closed_today=frozenset(closed_today),
        )
        plan = plan_buys(candidates, self.limits, account, self.costs)
        for skipped in plan.skipped:
            self.skip(skipped.reason.value)
            self._decisions.append(ScanDecision(day, skipped.code, skipped.reason.value, skipped.detail))
        for buy in plan.buys:
            self._decisions.append(ScanDecision(day, buy.code, "BUY", buy.bound_by.value))
            amount = buy.amount
            fee = self.costs.fee(amount)
            self.cash -= amount + fee
            pos = _Position(
                position_id=self._next_position,
                code=buy.code,
                name=buy.name,
                score=buy.score,
                entry_index=index,
                entry_day=day,
                entry_price=buy.price,
                quantity=buy.quantity,
                buy_fee=fee,
                strategy=ExitStrategy.arm(
                    buy.code,
                    buy.price,
                    buy.quantity,
                    self.config.stop_loss_rate,
                    self.config.preserve_rate,
                    self.config.take_profit_rate,
                ),
            )
            self._next_position += 1
            self._open[pos.position_id] = pos
            self._record(pos, day, Side.BUY, "BUY", FillBasis.CLOSE, buy.quantity, buy.price, fee, 0)

    def _sell(self, pos: _Position, f: ExitFill, day: date) -> None:
        amount = f.quantity * f.price
        fee = self.costs.fee(amount)
        tax = self.costs.sell_tax(amount)
        self.cash += amount - fee - tax
        pos.sold_quantity += f.quantity
        pos.sell_amount += amount
        pos.sell_fees += fee
        pos.sell_taxes += tax
        if f.reason not in pos.exits:
            pos.exits.append(f.reason)
        self._record(pos, day, Side.SELL, f.reason.value, f.basis, f.quantity, f.price, fee, tax)

    def _record(
        self,
        pos: _Position,
        day: date,
        side: Side,
        reason: str,
        basis: FillBasis,
        quantity: int,
        price: int,
        fee: int,
        tax: int,
    ) -> None:
        amount = quantity * price
        if side is Side.BUY:
            cash_flow, pnl = -(amount + fee), -fee
        else:
            cash_flow, pnl = amount - fee - tax, (price - pos.entry_price) * quantity - fee - tax
        self._trades.append(
            TradeRow(
                trade_id=len(self._trades) + 1,
                position_id=pos.position_id,
                day=day,
                code=pos.code,
                name=pos.name,
                side=side,
                reason=reason,
                basis=basis,
                quantity=quantity,
                price=price,
                amount=amount,
                fee=fee,
                tax=tax,
                cash_flow=cash_flow,
                profit_loss=pnl,
                score=pos.score,
            )
        )


def session_times_for(calendar_source: str) -> Callable[[date], SessionTimes]:
    """Session hours of a day: XKRX's (late-open days shift) on an XKRX timeline, else the regular ones."""
    if calendar_source == CALENDAR_XKRX:
        return calendar.hours_of
    return lambda _day: REGULAR_SESSION_TIMES


class _IndexedDay:
    """:class:`DayBars` over :class:`MarketData`'s dense arrays: every look-up is one array index."""

    def __init__(self, data: MarketData) -> None:
        self.data = data
        self.index = 0
        self.day = data.days[0]

    def bar(self, code: str) -> Bar | None:
        return self.data.bar(self.index, code)

    def prev_close(self, code: str) -> int | None:
        return self.data.close_before(self.index, code)

    def mark(self, code: str) -> int | None:
        return self.data.close_on_or_before(self.index, code)

    def minutes(self, code: str) -> Sequence[MinuteBar]:
        if not self.data.minutes:
            return ()
        return self.data.minutes.get((code, self.day), ())


@contextmanager
def progress_bar(enabled: bool, total: int, label: str = "backtest") -> Iterator[Callable[[], None]]:
    """A rich progress bar on stderr (a no-op when disabled); yields the function that advances it."""
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


def run_backtest(
    data: MarketData,
    config: BacktestConfig,
    *,
    progress: bool = False,
    start: int = 0,
    end: int | None = None,
) -> BacktestResult:
    """Run the product's rules over ``data`` (indexed bar access).

    ``start``/``end`` (indices into ``data.days``, end exclusive) run a window with a fresh account: the
    first day's previous close still comes from the day before the window, as it would live.
    """
    stop = len(data.days) if end is None else end
    if not 0 <= start < stop <= len(data.days):
        raise ValueError(f"window {start}..{stop} outside the {len(data.days)} days of the data")
    sim = Simulation(config)
    if start == 0 and stop == len(data.days):
        sim.skip(OUTSIDE_BARS, data.scans_outside)
    hours = session_times_for(data.calendar)
    view = _IndexedDay(data)
    with progress_bar(progress, stop - start) as advance:
        for i in range(start, stop):
            day = data.days[i]
            view.index, view.day = i, day
            sim.trading_day(i, day, hours(day), view, data.scans[i])
            advance()
    bars = data.bars_between(start, stop)
    return sim.result(bars=bars, stocks=len(data.codes), calendar_source=data.calendar)
