"""The exit engine: arms three-tier strategies, watches prices through the exit book, sends sells.

State lives in the database (``three_tier_strategies``, ``conditional_orders``, sell intents) and is
mirrored in memory by an :class:`ExitBook` for the price watch. Every change goes through the domain state
machine and is written back at once, so a restart rebuilds the same book: working sells are the open sell
intents, attempt numbers are the count of sell intents per tier.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from autotrade.config import Settings
from autotrade.domain.calendar import hours_of, is_trading_day
from autotrade.domain.exit_book import ExitBook
from autotrade.domain.exits import (
    TERMINAL_STATUSES,
    WATCHED_STATUSES,
    DayEnd,
    ExitEvent,
    ExitStrategy,
    PriceTick,
    RestingStatus,
    SellIntent,
    StrategyStatus,
    TierPrices,
    TierStatus,
)
from autotrade.domain.krx import KST
from autotrade.domain.models import Side, Tier, require_aware
from autotrade.domain.orders import FINAL_STATUSES, IntentStatus, intent_key
from autotrade.store.db import Database
from autotrade.store.models import ConditionalOrder, OrderIntentRow, ThreeTierStrategy
from autotrade.store.repositories import Intents
from autotrade.trading.ports import OrderType

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PendingSell:
    intent_id: int
    strategy_id: int
    user_id: str
    account_no: str
    code: str
    tier: Tier
    quantity: int


def exit_purpose(strategy_id: int, tier: Tier, attempt: int) -> str:
    return f"EXIT:{strategy_id}:{tier.value}:{attempt}"


AT_DAY_END = frozenset(RestingStatus) - {RestingStatus.NONE}


def is_resting(intent: OrderIntentRow) -> bool:
    """A resting stop's intent (a stop-limit sell at the broker), not a market sell of a tier."""
    return intent.trade_type == OrderType.STOP_LIMIT.value


def resting_purpose(strategy_id: int, n: int) -> str:
    return f"REST:{strategy_id}:{n}"


def strategy_from_row(row: ThreeTierStrategy, sells: Sequence[OrderIntentRow], today: date) -> ExitStrategy:
    """Rebuild the domain state machine from its rows and its sell intents. A resting stop of an earlier day
    is gone (a day order); today's rests for what it has not filled, or is being placed."""
    tiers = {o.order_type: o.status for o in row.orders}
    in_flight = {t: 0 for t in Tier}
    attempts = {t: 0 for t in Tier}
    resting, resting_status = 0, RestingStatus.NONE
    for intent in sells:
        if intent.tier is None:
            continue
        if is_resting(intent):
            if intent.trading_day == today and intent.status not in FINAL_STATUSES:
                if intent.status in (IntentStatus.ACCEPTED, IntentStatus.PARTIALLY_FILLED):
                    resting, resting_status = intent.quantity - intent.filled_quantity, RestingStatus.RESTING
                else:
                    resting_status = RestingStatus.PLACING
            continue
        attempts[intent.tier] += 1
        if intent.status not in FINAL_STATUSES:
            in_flight[intent.tier] += intent.quantity - intent.filled_quantity
    return ExitStrategy(
        code=row.code,
        entry_price=row.entry_price,
        quantity=row.quantity,
        prices=TierPrices(row.stop_loss_price, row.preserve_price, row.take_profit_price),
        held=row.held_quantity,
        preserve_target=row.preserve_target,
        preserve_sold=row.preserve_sold,
        status=row.status,
        tiers={t: tiers.get(t, TierStatus.CANCELLED) for t in Tier},
        in_flight=in_flight,
        attempts=attempts,
        resting=resting,
        resting_status=resting_status,
    )


def save_strategy(row: ThreeTierStrategy, s: ExitStrategy, at: datetime) -> None:
    row.status = s.status
    row.held_quantity = s.held
    row.preserve_sold = s.preserve_sold
    if s.status in TERMINAL_STATUSES and row.closed_at is None:
        row.closed_at = at
    quantities = {
        Tier.STOP_LOSS: s.stop_quantity(),
        Tier.PRESERVE: s.preserve_target,
        Tier.TAKE_PROFIT: s.quantity - s.preserve_target if s.preserve_target else s.quantity,
    }
    for order in row.orders:
        new_status = s.tiers[order.order_type]
        if new_status is TierStatus.EXECUTED and order.status is not TierStatus.EXECUTED:
            order.executed_at = at
        order.status = new_status
        if order.order_type is Tier.STOP_LOSS or order.status is TierStatus.ACTIVE:
            order.quantity = quantities[order.order_type]


class ExitEngine:
    def __init__(self, db: Database, settings: Settings, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.book: ExitBook[int] = ExitBook()
        self._owner: dict[int, tuple[str, str, str]] = {}  # strategy id -> user, account, code
        self._armed: dict[int, datetime | None] = {}  # strategy id -> when it was armed

    # --- arming and loading ---

    def arm(
        self,
        s: Session,
        *,
        user_id: str,
        account_no: str,
        code: str,
        name: str,
        quantity: int,
        entry_price: int,
        entry_date: date,
        buy_intent_key: str,
    ) -> ThreeTierStrategy:
        """Create (once per buy) the strategy and its three tier rows; add it to the book."""
        existing = s.scalar(
            sa.select(ThreeTierStrategy).where(ThreeTierStrategy.buy_intent_key == buy_intent_key)
        )
        if existing is not None:
            return existing
        cfg = self.settings
        domain = ExitStrategy.arm(
            code, entry_price, quantity, cfg.stop_loss_rate, cfg.preserve_rate, cfg.take_profit_rate
        )
        now = self.clock()
        row = ThreeTierStrategy(
            user_id=user_id, account_no=account_no, buy_intent_key=buy_intent_key, code=code, name=name,
            quantity=quantity, entry_price=entry_price, entry_date=entry_date,
            stop_loss_price=domain.prices.stop_loss, preserve_price=domain.prices.preserve,
            take_profit_price=domain.prices.take_profit, stop_loss_rate=cfg.stop_loss_rate,
            preserve_rate=cfg.preserve_rate, take_profit_rate=cfg.take_profit_rate, held_quantity=quantity,
            preserve_target=domain.preserve_target, status=StrategyStatus.ACTIVE, armed_at=now,
        )  # fmt: skip
        trigger = {
            Tier.STOP_LOSS: domain.prices.stop_loss,
            Tier.PRESERVE: domain.prices.preserve,
            Tier.TAKE_PROFIT: domain.prices.take_profit,
        }
        for tier in Tier:
            row.orders.append(
                ConditionalOrder(
                    user_id=user_id, account_no=account_no, order_type=tier, trigger_price=trigger[tier],
                    quantity=0, status=domain.tiers[tier],
                )
            )  # fmt: skip
        save_strategy(row, domain, now)
        s.add(row)
        s.flush()
        self._add(row.id, domain, user_id, account_no, now)
        return row

    def load(self, user_ids: Iterable[str] | None = None) -> int:
        """Load every watched strategy (optionally of ``user_ids``) into the book; returns how many."""
        with self.db.unit_of_work() as s:
            q = sa.select(ThreeTierStrategy).where(ThreeTierStrategy.status.in_(list(WATCHED_STATUSES)))
            if user_ids is not None:
                q = q.where(ThreeTierStrategy.user_id.in_(list(user_ids)))
            rows = s.scalars(q).all()
            sells = self._sells_by_strategy(s, [r.id for r in rows])
            today = self.today()
            for row in rows:
                if row.id not in self.book:
                    domain = strategy_from_row(row, sells.get(row.id, []), today)
                    self._add(row.id, domain, row.user_id, row.account_no, row.armed_at)
        return len(self.book)

    def today(self) -> date:
        return self.clock().astimezone(KST).date()

    def owner(self, strategy_id: int) -> tuple[str, str, str]:
        """(user id, account number, stock code) of a strategy in the book."""
        return self._owner[strategy_id]

    def _add(
        self, strategy_id: int, domain: ExitStrategy, user_id: str, account_no: str, armed_at: datetime | None
    ) -> None:
        if strategy_id in self.book:
            self.book.remove(strategy_id)
        self.book.add(strategy_id, domain)
        self._owner[strategy_id] = (user_id, account_no, domain.code)
        self._armed[strategy_id] = armed_at

    @staticmethod
    def _sells_by_strategy(s: Session, ids: list[int]) -> dict[int, list[OrderIntentRow]]:
        out: dict[int, list[OrderIntentRow]] = {}
        if not ids:
            return out
        for chunk in range(0, len(ids), 500):
            rows = s.scalars(
                sa.select(OrderIntentRow).where(
                    OrderIntentRow.strategy_id.in_(ids[chunk : chunk + 500]), OrderIntentRow.side == Side.SELL
                )
            ).all()
            for r in rows:
                if r.strategy_id is not None:
                    out.setdefault(r.strategy_id, []).append(r)
        return out

    # --- events ---

    def on_price(self, code: str, price: int, at: datetime) -> list[PendingSell]:
        """A trade price: run the book; every sell it fires becomes an intent row before it is returned."""
        fired = self.book.on_price(code, price, at)
        if not fired:
            return []
        pending: list[PendingSell] = []
        with self.db.unit_of_work() as s:
            for key, intent in fired:
                pending.append(self._record_sell(s, key, intent, at))
        return pending

    def catch_up(self, code: str, low: int, high: int, at: datetime) -> list[PendingSell]:
        """The day's low and high of ``code`` (the broker's quote), for a watch that (re)starts in the
        session: a level crossed while no watcher ran (the process died, the feed was down) and crossed back
        since left no tick for :meth:`on_price`, yet a resting order at that level would have traded. Every
        strategy armed before today's open held its shares through every trade of the day, so its levels are
        checked against both extremes: the low first (the stop is the protective side; once it fired the
        exit is committed and the high adds nothing), then the high. A tier that already acted today is not
        fired again (its status says so). Strategies armed after the open are left alone: the extremes may
        predate them. Non-positive extremes (a quote without them) are ignored."""
        require_aware(at)
        day = at.astimezone(KST).date()
        if not is_trading_day(day):
            return []
        opened = datetime.combine(day, hours_of(day).open, tzinfo=KST)
        keys = [
            k for k, st in self.book
            if st.code == code and (armed := self._armed.get(k)) is not None and armed < opened
        ]  # fmt: skip
        fired: list[tuple[int, SellIntent]] = []
        for key in keys:
            for price in (low, high):
                if price > 0 and not self.book.get(key).is_closed:
                    fired.extend((key, i) for i in self.book.apply(key, PriceTick(price, at)))
        if not fired:
            return []
        pending: list[PendingSell] = []
        with self.db.unit_of_work() as s:
            for key, intent in fired:
                _, account_no, _ = self._owner[key]
                log.info(
                    "%s %s: %s fired on the day's %s (%d), crossed before this watch started; selling %d",
                    account_no, code, intent.tier, "low" if intent.tier is Tier.STOP_LOSS else "high",
                    low if intent.tier is Tier.STOP_LOSS else high, intent.quantity,
                )  # fmt: skip
                pending.append(self._record_sell(s, key, intent, at))
        return pending

    def apply(self, strategy_id: int, event: ExitEvent) -> list[PendingSell]:
        """A fill, an ended order, a day end or a holding sync for one strategy; persisted at once."""
        if strategy_id not in self.book:
            self.load_one(strategy_id)
        intents = self.book.apply(strategy_id, event)
        with self.db.unit_of_work() as s:
            row = s.get_one(ThreeTierStrategy, strategy_id)
            save_strategy(row, self.book.get(strategy_id), event.at)
            pending = [self._record_sell(s, strategy_id, i, event.at) for i in intents]
        if self.book.get(strategy_id).is_closed:
            self.book.remove(strategy_id)
        return pending

    def load_one(self, strategy_id: int) -> None:
        with self.db.unit_of_work() as s:
            row = s.get_one(ThreeTierStrategy, strategy_id)
            sells = self._sells_by_strategy(s, [row.id]).get(row.id, [])
            domain = strategy_from_row(row, sells, self.today())
            self._add(row.id, domain, row.user_id, row.account_no, row.armed_at)

    def day_end(self, at: datetime) -> int:
        """Working sells and resting stops die with the day (day orders); strategies stay armed."""
        n = 0
        for key in [k for k, s in self.book if any(s.in_flight.values()) or s.resting_status in AT_DAY_END]:
            self.apply(key, DayEnd(at))
            n += 1
        return n

    def _record_sell(self, s: Session, strategy_id: int, intent: SellIntent, at: datetime) -> PendingSell:
        user_id, account_no, code = self._owner[strategy_id]
        day = at.astimezone(KST).date()
        purpose = exit_purpose(strategy_id, intent.tier, intent.attempt)
        row, _ = Intents(s).create_once(
            OrderIntentRow(
                key=intent_key(day, user_id, account_no, code, purpose), trading_day=day, user_id=user_id,
                account_no=account_no, code=code, side=Side.SELL, purpose=purpose, quantity=intent.quantity,
                price=None, trade_type=OrderType.MARKET.value, strategy_id=strategy_id, tier=intent.tier,
                status=IntentStatus.NEW,
            )
        )  # fmt: skip
        strategy_row = s.get_one(ThreeTierStrategy, strategy_id)
        save_strategy(strategy_row, self.book.get(strategy_id), at)
        log.info("%s %s: %s fired at %s for %d shares", account_no, code, intent.tier, intent.observed_price,
                 intent.quantity)  # fmt: skip
        return PendingSell(row.id, strategy_id, user_id, account_no, code, intent.tier, intent.quantity)
