"""The monthly review: the month's backtest beside live trading, trade by trade, every difference named.

Inputs:

- **Scans**: the scans as received, from the database (each trading day's accepted ``ScanBatch`` payload,
  the batch the day's signals were planned from when there were several).
- **Prices**: the daily bars the product saw, from the database (``daily_bars``: each trading day's quote
  of the codes it cared about, recorded after the close by the daily report;
  :mod:`autotrade.store.daily_bars`), or, when ``review_bars_location`` is set, a bars file or folder in
  any layout of :mod:`autotrade.backtest.sources`. The review says which, and names every trade on a
  (stock, day) without a bar (NO_BAR, and the list of missing bars).
- **Rules**: the live settings (tier rates, score, limits, costs) with each account's own daily limit. The
  backtest starts with the account's cash of the last equity snapshot before the month (the daily report
  takes one each trading day), or with the backtester's default capital when there is none (said so).

Scope: positions bought in the month, on each account that had signals or trades in it; positions bought
before the month are left out on both sides (live, they still count toward the holding limit: such a
difference shows as a limit that bound live). Exits are counted through the month's last day.

Comparison, per account: positions are matched by (stock, buy day). For each position, the buy and each exit
(grouped by tier: the first day it sold, the shares, the average price) are compared, and every difference
gets a :class:`Why`:

1. a position on one side only: its buy is explained from the other side's record of that scan row (the
   live signal's skip reason or order outcome; the backtest's
   :class:`~autotrade.backtest.engine.ScanDecision`), and its exits as following from that buy;
2. a buy on both sides: other shares (a partial fill, sizing at the scan's price, a limit), another price;
3. an exit on both sides: another day (a missed exit, a day without a bar), other shares (the bar's order of
   levels, a partial sell, the buy's shares), another price (the live fill against the backtest's convention);
4. an exit on one side only: the bar reached the level but live did not sell (missed), live sold where the
   bar shows no such price (extra), the bar held both the stop and an upper level (order within the day), no
   bar that day (suspended or missing), or the other side's position had already closed.

Money is integer KRW throughout; a trade's effect is live's net cash minus the backtest's.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from autotrade.backtest.config import BacktestConfig
from autotrade.backtest.engine import NO_BAR, UPPER_LIMIT_CLOSE, BacktestResult, ScanDecision, run_backtest
from autotrade.backtest.fills import Bar
from autotrade.config import Settings, TradingRules
from autotrade.domain.exits import ExitStrategy
from autotrade.domain.krx import CostRates
from autotrade.domain.models import ExitReason, ScanRow, SignalStatus, SkipReason, TradeAction, average_of
from autotrade.domain.models import Side as OrderSide
from autotrade.domain.orders import IntentStatus
from autotrade.store.db import Database
from autotrade.store.models import (
    EquitySnapshot,
    OrderIntentRow,
    ScanBatch,
    ThreeTierStrategy,
    TradeRecordRow,
    TradingSignal,
    UserApiKey,
)

if TYPE_CHECKING:
    import pandas as pd

BUY = "BUY"
PRICE_HISTORY_DAYS = 45  # calendar days of bars before the month kept for the previous closes


class Why(StrEnum):
    """The named reason of one difference between live trading and the backtest."""

    FILL_PRICE = "FILL_PRICE"  # the live fill's price against the backtest's fill convention
    BUY_NOT_FILLED = "BUY_NOT_FILLED"  # live ordered it; nothing filled (no seller after hours)
    BUY_PARTLY_FILLED = "BUY_PARTLY_FILLED"  # live ordered more than filled
    BUY_NOT_SENT = "BUY_NOT_SENT"  # the live order was rejected or failed
    SIZING_PRICE = "SIZING_PRICE"  # live sized at the scan's price, the backtest at the close
    LIMIT_BOUND = "LIMIT_BOUND"  # a risk limit bound on one side only (count, budget, cash, per stock)
    HOLDINGS_DIFFER = "HOLDINGS_DIFFER"  # held, bought or closed today on one side only
    NO_LIVE_SIGNAL = "NO_LIVE_SIGNAL"  # live made no signal of the row (the account did not trade that day)
    NOT_IN_SCAN = "NOT_IN_SCAN"  # live bought a stock the stored scans do not hold that day
    NO_BAR = "NO_BAR"  # no bar that day (suspended, or missing from the bars): the backtest cannot trade it
    UPPER_LIMIT_CLOSE = "UPPER_LIMIT_CLOSE"  # closed at the upper limit: the backtest assumes no fill
    MISSED_EXIT = "MISSED_EXIT"  # the bar reached the tier's level; live did not sell that day
    EXTRA_EXIT = "EXTRA_EXIT"  # live sold at a tier on a day whose bar does not reach its level
    INTRADAY_ORDER = "INTRADAY_ORDER"  # the bar reached the stop and an upper level: the order is unknown
    SELL_PARTLY_FILLED = "SELL_PARTLY_FILLED"  # a live sell filled fewer shares than the tier's
    EXTERNAL_SELL = "EXTERNAL_SELL"  # sold outside the product (found by reconciliation)
    FOLLOWS_BUY = "FOLLOWS_BUY"  # an exit of a position (or shares) only one side bought
    FOLLOWS_EXIT = "FOLLOWS_EXIT"  # the other side's position had already closed
    UNEXPLAINED = "UNEXPLAINED"


class Aspect(StrEnum):
    ONLY_LIVE = "ONLY_LIVE"
    ONLY_BACKTEST = "ONLY_BACKTEST"
    DAY = "DAY"
    QUANTITY = "QUANTITY"
    PRICE = "PRICE"


LIMIT_SKIPS = frozenset(
    {
        SkipReason.MAX_STOCK_COUNT,
        SkipReason.DAILY_BUDGET_EXHAUSTED,
        SkipReason.INSUFFICIENT_CASH,
        SkipReason.PRICE_ABOVE_PER_STOCK_LIMIT,
    }
)
HOLDING_SKIPS = frozenset({SkipReason.ALREADY_HELD, SkipReason.BOUGHT_TODAY, SkipReason.CLOSED_TODAY})


@dataclass(frozen=True, slots=True)
class Fill:
    """One side's trade: a buy, or one tier's sells (first day, all its shares, the average price)."""

    day: date
    quantity: int
    amount: int
    fee: int
    tax: int
    buy: bool

    @property
    def price(self) -> int:
        return average_of(self.amount, self.quantity) if self.quantity else 0

    @property
    def net(self) -> int:
        """Cash in (a sell, after fee and tax) or out (a buy, with its fee)."""
        return -(self.amount + self.fee) if self.buy else self.amount - self.fee - self.tax

    def shown(self) -> str:
        return f"{self.day:%m-%d} {self.quantity:,} @ {self.price:,}"

    def as_json(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "quantity": self.quantity, "price": self.price,
                "amount": self.amount, "fee": self.fee, "tax": self.tax, "net": self.net}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Finding:
    aspect: Aspect
    reason: Why
    detail: str


@dataclass(frozen=True, slots=True)
class TradeComparison:
    """One trade of a position (its buy, or one exit tier) on both sides, with what differs and why."""

    user_id: str
    account_no: str
    code: str
    name: str
    entry_day: date
    trade: str  # BUY or an ExitReason
    live: Fill | None
    backtest: Fill | None
    findings: tuple[Finding, ...]

    @property
    def agrees(self) -> bool:
        return not self.findings

    @property
    def effect(self) -> int:
        """Live's net cash minus the backtest's for this trade, KRW."""
        return (self.live.net if self.live else 0) - (self.backtest.net if self.backtest else 0)


@dataclass(frozen=True, slots=True)
class AccountReview:
    user_id: str
    account_no: str
    daily_limit: int
    capital: int
    capital_basis: str
    trades: tuple[TradeComparison, ...]
    live_realized: int  # realised P&L after costs of the month's exits (the positions bought in the month)
    backtest_realized: int

    @property
    def differences(self) -> list[tuple[TradeComparison, Finding]]:
        return [(t, f) for t in self.trades for f in t.findings]


@dataclass(frozen=True)
class Review:
    month: str  # YYYY-MM
    first_day: date
    last_day: date
    bars_source: str
    scan_days: int
    accounts: tuple[AccountReview, ...] = ()
    skipped: str | None = None  # why there was nothing to review
    settings: dict[str, Any] = field(default_factory=dict)
    prices_note: str = ""  # where the prices come from (PRICES_NOTE for a bars file, DATABASE_NOTE)
    # (day, code, what needed it) of each scan row and live trade of the month without a bar
    missing_bars: tuple[tuple[date, str, str], ...] = ()

    @property
    def differences(self) -> list[tuple[TradeComparison, Finding]]:
        return [d for a in self.accounts for d in a.differences]

    def as_json(self) -> dict[str, Any]:
        return {
            "month": self.month, "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "bars_source": self.bars_source, "prices_note": self.prices_note, "scan_days": self.scan_days,
            "skipped": self.skipped, "settings": self.settings,
            "missing_bars": [{"day": d.isoformat(), "code": c, "needed_by": why}
                             for d, c, why in self.missing_bars],
            "accounts": [
                {"user_id": a.user_id, "account_no": a.account_no, "daily_limit": a.daily_limit,
                 "capital": a.capital, "capital_basis": a.capital_basis, "live_realized": a.live_realized,
                 "backtest_realized": a.backtest_realized,
                 "trades": [
                     {"code": t.code, "name": t.name, "entry_day": t.entry_day.isoformat(), "trade": t.trade,
                      "live": t.live.as_json() if t.live else None,
                      "backtest": t.backtest.as_json() if t.backtest else None, "effect": t.effect,
                      "findings": [{"aspect": f.aspect.value, "reason": f.reason.value, "detail": f.detail}
                                   for f in t.findings]}
                     for t in a.trades
                 ]}
                for a in self.accounts
            ],
        }  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.as_json(), ensure_ascii=False, indent=2)

    def markdown(self) -> str:
        out = [f"# Monthly review {self.month}", ""]
        out.append(
            f"Backtest of the scans received ({self.scan_days} trading days) over daily bars from "
            f"`{self.bars_source}`, with the live settings; compared with live trading trade by trade. "
            f"{self.prices_note}"
        )
        if self.skipped:
            return "\n".join([*out, "", f"Nothing to review: {self.skipped}.", ""])
        if self.missing_bars:
            shown = "; ".join(f"{c} on {d:%m-%d} ({why})" for d, c, why in self.missing_bars)
            out += ["", f"No bar of {len(self.missing_bars)} stock-days the review needed: {shown}."]
        for a in self.accounts:
            same = sum(1 for t in a.trades if t.agrees)
            out += [
                "", f"## {a.user_id} / {a.account_no}", "",
                f"Capital {a.capital:,} KRW ({a.capital_basis}); daily limit {a.daily_limit:,} KRW. "
                f"{len(a.trades)} trades compared, {same} the same, {len(a.differences)} differences. "
                f"Realised P&L after costs: live {a.live_realized:+,} KRW, backtest {a.backtest_realized:+,} "
                f"KRW ({a.live_realized - a.backtest_realized:+,}).",
            ]  # fmt: skip
            diffs = [t for t in a.trades if not t.agrees]
            if not diffs:
                continue
            out += ["", "| stock | bought | trade | live | backtest | effect (KRW) | what differs | reason |",
                    "|---|---|---|---|---|---:|---|---|"]  # fmt: skip
            for t in diffs:
                live = t.live.shown() if t.live else "-"
                bt = t.backtest.shown() if t.backtest else "-"
                what = "; ".join(f"{f.aspect.value}: {f.detail}" for f in t.findings)
                why = ", ".join(dict.fromkeys(f.reason.value for f in t.findings))
                out.append(
                    f"| {t.code} {t.name} | {t.entry_day:%m-%d} | {t.trade} | {live} | {bt} | {t.effect:+,} "
                    f"| {_cell(what)} | {why} |"
                )
        return "\n".join([*out, ""])


PRICES_NOTE = (
    "The bars are the configured bars file's (AUTOTRADE_REVIEW_BARS_LOCATION), not prices the product "
    "recorded."
)
DATABASE_NOTE = (
    "The bars are the ones the product recorded after each close (daily_bars: the broker's quote of the "
    "day's scanned and held stocks)."
)
DATABASE_SOURCE = "database daily_bars"


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


# --- the month's inputs ---


def month_span(month: str | date) -> tuple[str, date, date]:
    """``YYYY-MM`` (or any day of the month) as (label, first day, last day)."""
    first = date.fromisoformat(f"{month}-01") if isinstance(month, str) else month.replace(day=1)
    last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    return f"{first:%Y-%m}", first, last


def month_scans(db: Database, first: date, last: date) -> list[tuple[date, ScanRow]]:
    """Each trading day's scan as received: the accepted batch the day's signals came from (the latest
    accepted one when no signal names one)."""
    with db.unit_of_work() as s:
        batches = s.scalars(
            sa.select(ScanBatch)
            .where(ScanBatch.trading_day.between(first, last), ScanBatch.status == "ACCEPTED")
            .order_by(ScanBatch.trading_day, ScanBatch.id)
        ).all()
        used: dict[int | None, int] = {
            batch: int(n)
            for batch, n in s.execute(
                sa.select(TradingSignal.scan_batch_id, sa.func.count())
                .where(TradingSignal.trading_day.between(first, last))
                .group_by(TradingSignal.scan_batch_id)
            ).all()
        }
        by_day: dict[date, ScanBatch] = {}
        for b in batches:
            best = by_day.get(b.trading_day)
            if best is None or (used.get(b.id, 0), b.id) >= (used.get(best.id, 0), best.id):
                by_day[b.trading_day] = b
        rows = []
        for day, b in sorted(by_day.items()):
            for d in json.loads(b.payload or "[]"):
                reasons = tuple(d.get("reasons") or ())
                rows.append((day, ScanRow(d["code"], d["name"], float(d["score"]), int(d["price"]), reasons)))
    return rows


def load_month_bars(bars: Path | pd.DataFrame, first: date, last: date) -> pd.DataFrame:
    """The bars of the month and of the weeks before it (their closes set the first days' price limits)."""
    import pandas as pd

    from autotrade.backtest.sources import normalise_bars, read_bars

    frame = read_bars(bars) if isinstance(bars, Path) else normalise_bars(bars)
    frame = frame.assign(date=pd.to_datetime(frame["date"]))
    since = pd.Timestamp(first - timedelta(days=PRICE_HISTORY_DAYS))
    keep = (frame["date"] >= since) & (frame["date"] <= pd.Timestamp(last))
    return frame.loc[keep].reset_index(drop=True)


# --- the review ---


def monthly_review(
    db: Database, month: str | date, bars: Path | pd.DataFrame | None, settings: Settings | TradingRules
) -> Review:
    """The month's backtest on the scans received and ``bars`` (None: the bars recorded in the database),
    compared with live trading (module doc)."""
    import pandas as pd

    from autotrade.backtest.data import MarketData
    from autotrade.store.daily_bars import bars_frame

    label, first, last = month_span(month)
    if bars is None:
        source, note = DATABASE_SOURCE, DATABASE_NOTE
        bars = bars_frame(db, first - timedelta(days=PRICE_HISTORY_DAYS), last)
    else:
        source, note = (str(bars) if isinstance(bars, Path) else "a bars frame"), PRICES_NOTE
    rules = TradingRules.model_validate(settings.model_dump(include=set(TradingRules.model_fields)))
    shown = {
        k: (str(v) if not isinstance(v, int | float | bool) else v) for k, v in rules.model_dump().items()
    }
    scans = month_scans(db, first, last)
    base: dict[str, Any] = {
        "month": label,
        "first_day": first,
        "last_day": last,
        "bars_source": source,
        "settings": shown,
        "prices_note": note,
    }
    scan_days = len({d for d, _ in scans})
    if not scans:
        return Review(**base, scan_days=0, skipped="no accepted scan was received in the month")
    frame = load_month_bars(bars, first, last)
    month_bars = frame[frame["date"] >= pd.Timestamp(first)]
    if month_bars.empty:
        return Review(**base, scan_days=scan_days, skipped=f"the bars hold no day of {label}")
    scan_frame = pd.DataFrame(
        [{"date": d.isoformat(), "code": r.code, "name": r.name, "score": r.score, "price": r.price}
         for d, r in scans],
        columns=["date", "code", "name", "score", "price"],
    )  # fmt: skip
    data = MarketData.from_frames(frame, scan_frame)
    start = next(i for i, d in enumerate(data.days) if d >= first)
    bar_of = _bar_lookup(frame)
    needed: dict[tuple[date, str], str] = {(d, r.code): "scanned" for d, r in scans}
    costs = rules.costs()
    accounts = []
    for user_id, account_no, daily_limit in _accounts(db, first, last):
        capital, basis = _capital(db, account_no, first)
        config = BacktestConfig(
            **rules.model_dump(), daily_limit=daily_limit, initial_capital=capital, use_krx_calendar=True
        )
        result = run_backtest(data, config, start=start)
        live = _live_ledger(db, account_no, first, last)
        for p in live.positions.values():
            needed[(p.entry_day, p.code)] = "live BUY"
            for reason, x in p.exits.items():
                needed[(x.day, p.code)] = f"live {reason}"
        accounts.append(
            _compare_account(
                user_id, account_no, daily_limit, capital, basis, result, live, bar_of, rules, costs
            )
        )
    missing = tuple((d, c, why) for (d, c), why in sorted(needed.items()) if (d, c) not in bar_of)
    return Review(**base, scan_days=scan_days, accounts=tuple(accounts), missing_bars=missing)


def _bar_lookup(frame: pd.DataFrame) -> dict[tuple[date, str], Bar]:
    return {
        (ts.date(), str(code)): Bar(int(o), int(h), int(lo), int(c))
        for ts, code, o, h, lo, c in zip(
            frame["date"],
            frame["code"],
            frame["open"],
            frame["high"],
            frame["low"],
            frame["close"],
            strict=True,
        )
    }


def _accounts(db: Database, first: date, last: date) -> list[tuple[str, str, int]]:
    """Accounts with a signal or a trade in the month: (user, account, daily limit)."""
    with db.unit_of_work() as s:
        active = {
            *s.scalars(
                sa.select(TradingSignal.account_no).where(TradingSignal.trading_day.between(first, last))
            ),
            *s.scalars(
                sa.select(TradeRecordRow.account_no).where(TradeRecordRow.trading_day.between(first, last))
            ),
        }
        keys = s.execute(
            sa.select(UserApiKey.user_id, UserApiKey.account_no, UserApiKey.daily_limit)
            .where(UserApiKey.account_no.in_(active))
            .order_by(UserApiKey.user_id, UserApiKey.account_no)
        ).all()
    return [(k.user_id, k.account_no, int(k.daily_limit)) for k in keys]


def _capital(db: Database, account_no: str, first: date) -> tuple[int, str]:
    with db.unit_of_work() as s:
        snap = s.scalar(
            sa.select(EquitySnapshot)
            .where(EquitySnapshot.account_no == account_no, EquitySnapshot.trading_day < first)
            .order_by(EquitySnapshot.trading_day.desc())
            .limit(1)
        )
        if snap is not None:
            return int(snap.cash), f"cash of the equity snapshot of {snap.trading_day.isoformat()}"
    default = int(BacktestConfig.model_fields["initial_capital"].default)
    return default, "no equity snapshot before the month: the backtester's default capital"


@dataclass
class _LivePosition:
    code: str
    name: str
    entry_day: date
    entry_price: int
    buy: Fill
    exits: dict[str, Fill] = field(default_factory=dict)


@dataclass
class _Live:
    positions: dict[tuple[str, date], _LivePosition]
    signals: dict[tuple[date, str], TradingSignal]
    intents: dict[tuple[date, str], OrderIntentRow]


def _live_ledger(db: Database, account_no: str, first: date, last: date) -> _Live:
    with db.unit_of_work() as s:
        signals = {
            (r.trading_day, r.code): r
            for r in s.scalars(
                sa.select(TradingSignal).where(
                    TradingSignal.account_no == account_no, TradingSignal.trading_day.between(first, last)
                )
            )
        }
        intents = {
            (r.trading_day, r.code): r
            for r in s.scalars(
                sa.select(OrderIntentRow).where(
                    OrderIntentRow.account_no == account_no,
                    OrderIntentRow.side == OrderSide.BUY,
                    OrderIntentRow.trading_day.between(first, last),
                )
            )
        }
        buys: dict[tuple[str, date], list[TradeRecordRow]] = defaultdict(list)
        for r in s.scalars(
            sa.select(TradeRecordRow).where(
                TradeRecordRow.account_no == account_no,
                TradeRecordRow.action == TradeAction.BUY,
                TradeRecordRow.trading_day.between(first, last),
            )
        ):
            buys[(r.code, r.trading_day)].append(r)
        positions: dict[tuple[str, date], _LivePosition] = {}
        for (code, day), rows in buys.items():
            positions[(code, day)] = _LivePosition(
                code, rows[0].name, day, 0, _fill(day, [(r.quantity, r.amount, r.fee, 0) for r in rows], True)
            )
        # each strategy belongs to the buy of its intent's day (the buy may be confirmed the next morning)
        strategies = s.execute(
            sa.select(ThreeTierStrategy.id, ThreeTierStrategy.code, ThreeTierStrategy.entry_price,
                      OrderIntentRow.trading_day)
            .join(OrderIntentRow, OrderIntentRow.key == ThreeTierStrategy.buy_intent_key)
            .where(ThreeTierStrategy.account_no == account_no,
                   OrderIntentRow.trading_day.between(first, last))
        ).all()  # fmt: skip
        owner: dict[int, _LivePosition] = {}
        for sid, code, entry, day in strategies:
            pos = positions.get((code, day))
            if pos is not None:
                pos.entry_price = int(entry)
                owner[sid] = pos
        sells: dict[tuple[int, str], list[TradeRecordRow]] = defaultdict(list)
        if owner:
            for r in s.scalars(
                sa.select(TradeRecordRow)
                .where(
                    TradeRecordRow.strategy_id.in_(list(owner)),
                    TradeRecordRow.action != TradeAction.BUY,
                    TradeRecordRow.trading_day <= last,
                )
                .order_by(TradeRecordRow.executed_at, TradeRecordRow.id)
            ):
                reason = (r.exit_reason or ExitReason.EXTERNAL).value
                sells[(int(r.strategy_id or 0), reason)].append(r)
        for (sid, reason), rows in sells.items():
            owner[sid].exits[reason] = _fill(
                rows[0].trading_day, [(r.quantity, r.amount, r.fee, r.tax) for r in rows], False
            )
        s.expunge_all()
    return _Live(positions, signals, intents)


def _fill(day: date, parts: Iterable[tuple[int, int, int, int]], buy: bool) -> Fill:
    q = a = f = t = 0
    for quantity, amount, fee, tax in parts:
        q, a, f, t = q + quantity, a + amount, f + fee, t + tax
    return Fill(day, q, a, f, t, buy)


@dataclass
class _BtPosition:
    code: str
    name: str
    entry_day: date
    entry_price: int
    buy: Fill
    exits: dict[str, Fill]
    closed_on: date | None


def _backtest_positions(result: BacktestResult) -> dict[tuple[str, date], _BtPosition]:
    trades: dict[int, list[Any]] = defaultdict(list)
    for t in result.trades:
        trades[t.position_id].append(t)
    out = {}
    for p in result.positions:
        rows = trades[p.position_id]
        buy = _fill(p.entry_day, [(r.quantity, r.amount, r.fee, 0) for r in rows if r.reason == BUY], True)
        exits: dict[str, Fill] = {}
        by_reason: dict[str, list[Any]] = defaultdict(list)
        for r in rows:
            if r.reason != BUY:
                by_reason[r.reason].append(r)
        for reason, sold in by_reason.items():
            exits[reason] = _fill(sold[0].day, [(r.quantity, r.amount, r.fee, r.tax) for r in sold], False)
        out[(p.code, p.entry_day)] = _BtPosition(
            p.code, p.name, p.entry_day, p.entry_price, buy, exits, p.exit_day
        )
    return out


def _realized(entry_price: int, exits: Iterable[Fill], costs: CostRates) -> int:
    """Sells after fee and tax, less what the shares cost with their buy fee (live's trade-record rule)."""
    total = 0
    for x in exits:
        basis = entry_price * x.quantity
        total += x.net - basis - costs.fee(basis)
    return total


def _compare_account(
    user_id: str,
    account_no: str,
    daily_limit: int,
    capital: int,
    basis: str,
    result: BacktestResult,
    live: _Live,
    bar_of: Mapping[tuple[date, str], Bar],
    rules: TradingRules,
    costs: CostRates,
) -> AccountReview:
    bt = _backtest_positions(result)
    decisions = {(d.day, d.code): d for d in result.decisions}
    trades: list[TradeComparison] = []
    for key in sorted(set(bt) | set(live.positions), key=lambda k: (k[1], k[0])):
        lp, bp = live.positions.get(key), bt.get(key)
        code, day = key
        name = (lp.name if lp else bp.name if bp else code) or code

        def comparison(trade: str, lf: Fill | None, bf: Fill | None, found: list[Finding]) -> TradeComparison:
            return TradeComparison(user_id, account_no, code, name, day, trade, lf, bf, tuple(found))  # noqa: B023

        if lp is not None and bp is not None:
            trades.append(comparison(BUY, lp.buy, bp.buy, _buy_findings(lp, bp, live, decisions)))
            levels = _levels(bp.entry_price, bp.buy.quantity, rules)
            for reason in _exit_order(lp.exits, bp.exits):
                lf, bf = lp.exits.get(reason), bp.exits.get(reason)
                found = _exit_findings(reason, lp, bp, lf, bf, levels, bar_of)
                trades.append(comparison(reason, lf, bf, found))
        elif lp is not None:
            why, detail = _live_only_buy(day, code, decisions)
            trades.append(comparison(BUY, lp.buy, None, [Finding(Aspect.ONLY_LIVE, why, detail)]))
            for reason, lf in lp.exits.items():
                note = f"the backtest did not buy it ({why.value})"
                trades.append(
                    comparison(reason, lf, None, [Finding(Aspect.ONLY_LIVE, Why.FOLLOWS_BUY, note)])
                )
        elif bp is not None:
            why, detail = _backtest_only_buy(day, code, live)
            trades.append(comparison(BUY, None, bp.buy, [Finding(Aspect.ONLY_BACKTEST, why, detail)]))
            for reason, bf in bp.exits.items():
                note = f"live did not buy it ({why.value})"
                trades.append(
                    comparison(reason, None, bf, [Finding(Aspect.ONLY_BACKTEST, Why.FOLLOWS_BUY, note)])
                )
    live_realized = sum(_realized(p.entry_price, p.exits.values(), costs) for p in live.positions.values())
    bt_realized = sum(_realized(p.entry_price, p.exits.values(), costs) for p in bt.values())
    return AccountReview(
        user_id, account_no, daily_limit, capital, basis, tuple(trades), live_realized, bt_realized
    )


def _exit_order(*sides: Mapping[str, Fill]) -> list[str]:
    reasons = {r: min(s[r].day for s in sides if r in s) for side in sides for r in side}
    order = [e.value for e in ExitReason]
    return sorted(reasons, key=lambda r: (reasons[r], order.index(r) if r in order else len(order)))


@dataclass(frozen=True, slots=True)
class _Levels:
    stop: int
    preserve: int
    take_profit: int

    def of(self, reason: str) -> int | None:
        return {"STOP_LOSS": self.stop, "PRESERVE": self.preserve, "TAKE_PROFIT": self.take_profit}.get(
            reason
        )


def _levels(entry: int, quantity: int, rules: TradingRules) -> _Levels:
    p = ExitStrategy.arm(
        "-", entry, max(quantity, 1), rules.stop_loss_rate, rules.preserve_rate, rules.take_profit_rate
    ).prices
    return _Levels(p.stop_loss, p.preserve, p.take_profit)


def _reaches(bar: Bar, reason: str, levels: _Levels) -> bool:
    level = levels.of(reason)
    if level is None:
        return False
    return bar.low <= level if reason == ExitReason.STOP_LOSS else bar.high >= level


def _both_ways(bar: Bar, levels: _Levels) -> bool:
    return bar.low <= levels.stop and bar.high >= levels.preserve


def _shown_bar(bar: Bar) -> str:
    return f"o {bar.open:,} h {bar.high:,} l {bar.low:,} c {bar.close:,}"


def _buy_findings(
    lp: _LivePosition, bp: _BtPosition, live: _Live, decisions: Mapping[tuple[date, str], ScanDecision]
) -> list[Finding]:
    found = []
    lb, bb = lp.buy, bp.buy
    if lb.quantity != bb.quantity:
        intent = live.intents.get((lp.entry_day, lp.code))
        signal = live.signals.get((lp.entry_day, lp.code))
        decision = decisions.get((bp.entry_day, bp.code))
        if intent is not None and intent.filled_quantity < intent.quantity:
            why, detail = (
                Why.BUY_PARTLY_FILLED,
                f"live ordered {intent.quantity:,}, {intent.filled_quantity:,} filled",
            )
        elif signal is not None and signal.current_price != bb.price:
            why = Why.SIZING_PRICE
            detail = (
                f"live sized at the scan's {signal.current_price:,}, the backtest at the close {bb.price:,}"
            )
        else:
            noted = json.loads(signal.reasons or "[]") if signal is not None else []
            live_bound = next((r for r in noted if str(r).startswith("bound by")), "?")
            detail = f"live {live_bound}, the backtest bound by {decision.detail if decision else '?'}"
            why = Why.LIMIT_BOUND
        found.append(
            Finding(Aspect.QUANTITY, why, f"{lb.quantity:,} live, {bb.quantity:,} backtest: {detail}")
        )
    if lb.price != bb.price:
        detail = f"live filled at {lb.price:,}, the backtest at the close {bb.price:,}"
        found.append(Finding(Aspect.PRICE, Why.FILL_PRICE, detail))
    return found


def _live_only_buy(
    day: date, code: str, decisions: Mapping[tuple[date, str], ScanDecision]
) -> tuple[Why, str]:
    d = decisions.get((day, code))
    if d is None:
        return Why.NOT_IN_SCAN, "the stored scans of the day do not hold it"
    if d.outcome == NO_BAR:
        return Why.NO_BAR, f"no bar of {code} on {day} (suspended, or missing from the bars)"
    if d.outcome == UPPER_LIMIT_CLOSE:
        return (
            Why.UPPER_LIMIT_CLOSE,
            "it closed at the upper limit: the backtest assumes no after-hours seller",
        )
    return _skip_reason(d.outcome, d.detail, "the backtest")


def _skip_reason(reason: str, detail: str, side: str) -> tuple[Why, str]:
    text = f"{side} skipped it: {reason}" + (f" ({detail})" if detail else "")
    if reason in LIMIT_SKIPS:
        return Why.LIMIT_BOUND, text
    if reason in HOLDING_SKIPS:
        return Why.HOLDINGS_DIFFER, text
    return Why.UNEXPLAINED, text


def _backtest_only_buy(day: date, code: str, live: _Live) -> tuple[Why, str]:
    signal = live.signals.get((day, code))
    if signal is None:
        return Why.NO_LIVE_SIGNAL, "live made no signal of it that day"
    if signal.status is SignalStatus.SKIPPED and signal.skip_reason is not None:
        return _skip_reason(signal.skip_reason.value, signal.skip_detail or "", "live")
    intent = live.intents.get((day, code))
    if intent is None or intent.status in (IntentStatus.REJECTED, IntentStatus.UNKNOWN):
        state = intent.status.value if intent else "no order"
        return Why.BUY_NOT_SENT, f"live's order did not reach the market ({state})"
    if intent.filled_quantity == 0:
        return Why.BUY_NOT_FILLED, f"live ordered {intent.quantity:,} ({intent.trade_type}); none filled"
    return Why.UNEXPLAINED, f"live signal {signal.status.value}, order {intent.status.value}"


def _exit_findings(
    reason: str,
    lp: _LivePosition,
    bp: _BtPosition,
    lf: Fill | None,
    bf: Fill | None,
    levels: _Levels,
    bar_of: Mapping[tuple[date, str], Bar],
) -> list[Finding]:
    code = bp.code
    level = levels.of(reason)
    at = f" {level:,}" if level else ""
    if lf is not None and bf is not None:
        found = []
        if lf.day != bf.day:
            if lf.day > bf.day:
                bar = bar_of.get((bf.day, code))
                shown = _shown_bar(bar) if bar else "no bar"
                found.append(
                    Finding(
                        Aspect.DAY,
                        Why.MISSED_EXIT,
                        f"the bar of {bf.day} ({shown}) reached{at}; live sold on {lf.day}",
                    )
                )
            else:
                bar = bar_of.get((lf.day, code))
                if bar is None:
                    found.append(
                        Finding(
                            Aspect.DAY,
                            Why.NO_BAR,
                            f"live sold on {lf.day}, a day without a bar of {code}; the backtest on {bf.day}",
                        )
                    )
                else:
                    found.append(
                        Finding(
                            Aspect.DAY,
                            Why.EXTRA_EXIT,
                            f"live sold on {lf.day}, whose bar ({_shown_bar(bar)}) does not reach{at}",
                        )
                    )
        if lf.quantity != bf.quantity:
            bar = bar_of.get((lf.day, code))
            if lp.buy.quantity != bp.buy.quantity:
                why, detail = Why.FOLLOWS_BUY, "the buys' shares differ"
            elif (
                bar is not None
                and _both_ways(bar, levels)
                and (set(lp.exits) - {reason} != set(bp.exits) - {reason})
            ):
                why = Why.INTRADAY_ORDER
                detail = (
                    f"the bar ({_shown_bar(bar)}) reached the stop {levels.stop:,} and the preserve "
                    f"{levels.preserve:,}: the backtest takes the stop first, live saw "
                    f"{', '.join(sorted(lp.exits))}"
                )
            elif lf.quantity < bf.quantity:
                why, detail = Why.SELL_PARTLY_FILLED, "live's sell filled fewer shares"
            else:
                why, detail = Why.UNEXPLAINED, "live sold more shares"
            found.append(
                Finding(Aspect.QUANTITY, why, f"{lf.quantity:,} live, {bf.quantity:,} backtest: {detail}")
            )
        if lf.day == bf.day and lf.price != bf.price:
            detail = (
                f"live sold at {lf.price:,} when its watch saw the price, "
                f"the backtest at{at or ' the open'} "
                f"({lf.price - bf.price:+,} a share)"
            )
            found.append(Finding(Aspect.PRICE, Why.FILL_PRICE, detail))
        return found
    if lf is not None:  # live only
        bar = bar_of.get((lf.day, code))
        if reason == ExitReason.EXTERNAL:
            return [Finding(Aspect.ONLY_LIVE, Why.EXTERNAL_SELL, "sold outside the product")]
        if bp.closed_on is not None and bp.closed_on < lf.day:
            return [
                Finding(
                    Aspect.ONLY_LIVE,
                    Why.FOLLOWS_EXIT,
                    f"the backtest's position closed on {bp.closed_on} by {', '.join(bp.exits)}",
                )
            ]
        if bar is None:
            return [Finding(Aspect.ONLY_LIVE, Why.NO_BAR, f"no bar of {code} on {lf.day}: the backtest held")]
        if _both_ways(bar, levels):
            return [
                Finding(
                    Aspect.ONLY_LIVE,
                    Why.INTRADAY_ORDER,
                    f"the bar ({_shown_bar(bar)}) reached the stop {levels.stop:,} and the preserve "
                    f"{levels.preserve:,}: the backtest takes the stop first, "
                    "selling everything",
                )
            ]
        return [
            Finding(
                Aspect.ONLY_LIVE,
                Why.EXTRA_EXIT,
                f"live sold on {lf.day}; the bar ({_shown_bar(bar)}) does not reach{at}",
            )
        ]
    assert bf is not None  # noqa: S101 - one side at least holds the reason
    bar = bar_of.get((bf.day, code))
    live_closed = max((x.day for x in lp.exits.values()), default=None)
    if (
        live_closed is not None
        and sum(x.quantity for x in lp.exits.values()) >= lp.buy.quantity
        and live_closed < bf.day
    ):
        return [Finding(Aspect.ONLY_BACKTEST, Why.FOLLOWS_EXIT, f"live's position closed on {live_closed}")]
    if bar is not None and _both_ways(bar, levels) and any(x.day == bf.day for x in lp.exits.values()):
        return [
            Finding(
                Aspect.ONLY_BACKTEST,
                Why.INTRADAY_ORDER,
                f"the bar ({_shown_bar(bar)}) reached both the stop and the preserve; live sold "
                f"{', '.join(sorted(lp.exits))}",
            )
        ]
    shown = _shown_bar(bar) if bar else "no bar"
    return [
        Finding(
            Aspect.ONLY_BACKTEST,
            Why.MISSED_EXIT,
            f"the bar of {bf.day} ({shown}) reached{at}; live did not sell at this tier",
        )
    ]


def differences_set(review: Review) -> set[tuple[str, str, str, str]]:
    """(stock, trade, aspect, reason) of every difference: what a test or a reader checks at a glance."""
    return {(t.code, t.trade, f.aspect.value, f.reason.value) for t, f in review.differences}


def write_review(review: Review, out_dir: Path) -> tuple[Path, Path]:
    """The review as ``review-YYYY-MM.md`` and ``.json`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / f"review-{review.month}.md", out_dir / f"review-{review.month}.json"
    md.write_text(review.markdown(), encoding="utf-8")
    js.write_text(review.to_json(), encoding="utf-8")
    return md, js


__all__: Sequence[str] = ("Aspect", "Review", "Why", "differences_set", "monthly_review", "write_review")


def bars_location(settings: Settings) -> Path | None:
    """Where the review's bars are: ``review_bars_location``, a relative path taken under the home; None when
    it is not set (the bars recorded in the database)."""
    if settings.review_bars_location is None:
        return None
    path = settings.review_bars_location.expanduser()
    return path if path.is_absolute() else settings.home / path
