"""Evening buys: per-user signals sized by risk, turned into buy intents and sent exactly once."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from autotrade.config import BuySession, Settings
from autotrade.domain.krx import KST
from autotrade.domain.models import ScanRow, Side, SignalStatus
from autotrade.domain.orders import NEEDS_RECONCILIATION, IntentStatus, intent_key
from autotrade.domain.risk import AccountState, BuyPlan, RiskLimits, plan_buys
from autotrade.store.batch import Transaction
from autotrade.store.db import Database
from autotrade.store.models import OrderIntentRow, ThreeTierStrategy, TradingSignal, UserApiKey
from autotrade.trading.orders import OrderService
from autotrade.trading.ports import AccountBroker, AccountView, NotProcessed, OrderType, OutcomeUnknown

log = logging.getLogger(__name__)

BUY_PURPOSE = "BUY"


@dataclass(frozen=True, slots=True)
class AccountRef:
    user_id: str
    account_no: str


@dataclass(slots=True)
class BuyOutcome:
    """What happened for one account in the evening run (also the artifact row)."""

    user_id: str
    account_no: str
    placed: list[tuple[str, int, int]] = field(default_factory=list)  # code, qty, price
    skipped: list[tuple[str, str]] = field(default_factory=list)  # code, reason
    failed: list[tuple[str, str]] = field(default_factory=list)  # code, error
    error: str | None = None

    @property
    def invested(self) -> int:
        return sum(q * p for _, q, p in self.placed)


# An account's plan: its signals and intents inserted in one statement each, ids back in the rows' order.
_INSERT_SIGNALS = sa.insert(TradingSignal).returning(TradingSignal.id, sort_by_parameter_order=True)
_INSERT_INTENTS = sa.insert(OrderIntentRow).returning(OrderIntentRow.id, sort_by_parameter_order=True)
# The same, one row per call (the PostgreSQL path pipelines the calls: asyncpg's fetchmany).
_INSERT_SIGNAL = sa.insert(TradingSignal).returning(TradingSignal.id)
_INSERT_INTENT = sa.insert(OrderIntentRow).returning(OrderIntentRow.id)
_INSERT_SKIP = sa.insert(TradingSignal)

PlanRows = tuple[list[dict[str, object]], list[dict[str, object]], list[dict[str, object]]]


async def write_plans(tx: Transaction, plans: list[PlanRows]) -> list[list[int]]:
    """Accounts' plans (each: its buys' signals, their intents, its skips) in one transaction: one INSERT
    of every plan's signals, one of their intents (each given its signal's id), one of the skips, whatever
    the number of accounts (measured at 10,000 accounts: a transaction per account was four round trips
    and a commit each, most of the round trips of the evening's database work). Each plan's intent ids.
    The plans stand or fall together: a plan refused (its intents' keys held by another run) fails the
    group, which :class:`~autotrade.store.batch.Grouped` then writes again plan by plan."""
    ordered = [row for p in plans for row in p[0]]
    intents = [row for p in plans for row in p[1]]
    skipped = [row for p in plans for row in p[2]]
    ids: list[int] = []
    if ordered:
        signal_ids = await tx.many(_INSERT_SIGNAL, ordered, keys=list(ordered[0]))
        linked = [{**i, "signal_id": sig[0][0]} for i, sig in zip(intents, signal_ids, strict=True)]
        ids = [int(rows[0][0]) for rows in await tx.many(_INSERT_INTENT, linked, keys=list(linked[0]))]
    if skipped:
        await tx.many(_INSERT_SKIP, skipped, keys=list(skipped[0]))
    per_plan: list[list[int]] = []
    start = 0
    for p in plans:
        per_plan.append(ids[start : start + len(p[1])])
        start += len(p[1])
    return per_plan


# What planning an account reads, built once: its key's daily limit and whether it was planned today, its
# buys of the day (not refused), the positions it closed.
_MINE: tuple[sa.BindParameter[str], sa.BindParameter[str], sa.BindParameter[date]] = (
    sa.bindparam("p_user"), sa.bindparam("p_account"), sa.bindparam("p_day", type_=sa.Date)
)  # fmt: skip
_LIMIT_AND_PLANNED = sa.select(
    UserApiKey.daily_limit,
    sa.select(sa.func.count(TradingSignal.id))
    .where(TradingSignal.trading_day == _MINE[2], TradingSignal.user_id == _MINE[0],
           TradingSignal.account_no == _MINE[1])
    .scalar_subquery(),
).where(UserApiKey.user_id == _MINE[0], UserApiKey.account_no == _MINE[1])  # fmt: skip
_BUYS_TODAY = sa.select(OrderIntentRow.code, OrderIntentRow.quantity, OrderIntentRow.price).where(
    OrderIntentRow.trading_day == _MINE[2], OrderIntentRow.account_no == _MINE[1],
    OrderIntentRow.side == Side.BUY, OrderIntentRow.status != IntentStatus.REJECTED,
)  # fmt: skip
_CLOSED = sa.select(ThreeTierStrategy.code, ThreeTierStrategy.closed_at).where(
    ThreeTierStrategy.account_no == _MINE[1], ThreeTierStrategy.closed_at.is_not(None),
    ThreeTierStrategy.entry_date <= _MINE[2],
)  # fmt: skip


def _mine(ref: AccountRef, day: date) -> dict[str, object]:
    return {"p_user": ref.user_id, "p_account": ref.account_no, "p_day": day}


@dataclass(slots=True)
class PreparedBuys:
    """An account's buys planned and recorded, not yet sent: (intent id, code, quantity, price, status)."""

    outcome: BuyOutcome
    intents: list[tuple[int, str, int, int, IntentStatus]]


def order_type_for(session: BuySession) -> OrderType:
    return OrderType.AFTER_HOURS_CLOSE if session is BuySession.AFTER_HOURS_CLOSE else OrderType.MARKET


CAPPABLE = ("max_daily_investment", "max_stock_count", "max_per_stock")


def tightened(limits: RiskLimits, caps: Mapping[str, int] | None) -> RiskLimits:
    """``limits`` with each given cap applied where it is lower (a run never loosens the settings)."""
    if not caps:
        return limits
    unknown = set(caps) - set(CAPPABLE)
    if unknown:
        raise ValueError(f"unknown limits: {sorted(unknown)}")
    return replace(limits, **{k: min(getattr(limits, k), int(v)) for k, v in caps.items()})


class BuyService:
    def __init__(self, db: Database, orders: OrderService, settings: Settings, clock: Callable[[], datetime]):
        self.db = db
        self.orders = orders
        self.settings = settings
        self.clock = clock
        self.costs = settings.costs()

    async def run_account(
        self,
        ref: AccountRef,
        broker: AccountBroker,
        scan: Sequence[ScanRow],
        day: date,
        scan_batch_id: int | None = None,
        dry_run: bool = False,
        caps: Mapping[str, int] | None = None,
    ) -> BuyOutcome:
        """Plan (or re-use the plan of an earlier run today) and send this account's buys. ``caps`` (a run's
        own ``max_daily_investment``, ``max_stock_count``, ``max_per_stock``) can only tighten the limits."""
        prepared = await self.prepare(ref, broker, scan, day, scan_batch_id, dry_run, caps)
        return await self.send(prepared, broker)

    async def prepare(
        self,
        ref: AccountRef,
        broker: AccountBroker | None,
        scan: Sequence[ScanRow],
        day: date,
        scan_batch_id: int | None = None,
        dry_run: bool = False,
        caps: Mapping[str, int] | None = None,
        view: AccountView | None = None,
    ) -> PreparedBuys:
        """The first half of :meth:`run_account`: the plan recorded (or found) and the intents to send. An
        evening run prepares the next accounts while others send, since sending is paced per key. Given the
        account's ``view`` (its cash and holdings, read beforehand), it makes no broker call: ``broker`` may
        then be None."""
        # The database work runs off the event loop: thousands of accounts share it in the evening run.
        out = BuyOutcome(ref.user_id, ref.account_no)
        limits, planned = await self._limits_and_whether_planned(ref, day, caps)
        if not planned:
            if view is None:
                if broker is None:
                    raise ValueError("an account not planned yet needs its view or its broker")
                view = await broker.account()
            held = {h.code for h in view.holdings if h.quantity > 0}
            state = await self._account_state(ref, day, view.cash, held)
            plan = plan_buys(scan, limits, state, self.costs)
            if dry_run:
                out.placed = [(b.code, b.quantity, b.price) for b in plan.buys]
                out.skipped = [(k.code, k.reason.value) for k in plan.skipped]
                return PreparedBuys(out, [])
            reasons = {r.code: list(r.reasons) for r in scan}
            recorded = await self._record_plan(ref, day, plan, scan_batch_id, reasons)
            if recorded is not None:
                out.skipped, intents = recorded
                return PreparedBuys(out, intents)
        out.skipped, intents = await self.db.run(self._skips_and_intents, ref, day)
        return PreparedBuys(out, intents)

    async def send(self, prepared: PreparedBuys, broker: AccountBroker) -> BuyOutcome:
        """The second half of :meth:`run_account`: each intent sent exactly once, the outcome collected."""
        out = prepared.outcome
        for intent_id, code, qty, price, status in prepared.intents:
            if status is IntentStatus.NEW or status in NEEDS_RECONCILIATION:  # else sent already: as it is
                try:
                    status = await self.orders.execute(intent_id, broker)
                except (NotProcessed, OutcomeUnknown) as exc:
                    out.failed.append((code, type(exc).__name__))
                    continue
            if status is IntentStatus.REJECTED:
                out.failed.append((code, "rejected"))
            elif status in NEEDS_RECONCILIATION:
                out.failed.append((code, "unresolved"))  # a later run adopts it or sends it again
            else:
                out.placed.append((code, qty, price))
        return out

    async def _limits_and_whether_planned(
        self, ref: AccountRef, day: date, caps: Mapping[str, int] | None
    ) -> tuple[RiskLimits, bool]:
        rows = await self.db.batched(_LIMIT_AND_PLANNED).rows(_mine(ref, day))
        if not rows:
            raise LookupError("no registered key for this account")
        daily_limit, signals = rows[0]
        return tightened(self.settings.risk_limits(daily_limit), caps), (signals or 0) > 0

    def _skips_and_intents(
        self, ref: AccountRef, day: date
    ) -> tuple[list[tuple[str, str]], list[tuple[int, str, int, int, IntentStatus]]]:
        return self._skips(ref, day), self._buy_intents(ref, day)

    async def _account_state(self, ref: AccountRef, day: date, cash: int, held: set[str]) -> AccountState:
        buys = await self.db.batched(_BUYS_TODAY).rows(_mine(ref, day))
        closed = await self.db.batched(_CLOSED).rows(_mine(ref, day))
        closed_today = {code for code, at in closed if at and at.astimezone(KST).date() == day}
        return AccountState(
            cash=cash,
            held_codes=frozenset(held),
            bought_today=frozenset(code for code, _, _ in buys),
            closed_today=frozenset(closed_today),
            spent_today=sum((price or 0) * quantity for _, quantity, price in buys),
        )

    def _plan_rows(
        self,
        ref: AccountRef,
        day: date,
        plan: BuyPlan,
        scan_batch_id: int | None,
        reasons: Mapping[str, list[str]] | None,
    ) -> PlanRows:
        """The plan's rows: its buys' signals, their intents (each to get its signal's id), its skips."""
        mine = {"user_id": ref.user_id, "account_no": ref.account_no, "trading_day": day}
        signal = {**mine, "scan_batch_id": scan_batch_id}
        trade_type = order_type_for(self.settings.buy_session).value
        ordered = [
            {**signal, "code": b.code, "name": b.name, "score": b.score, "current_price": b.price,
             "target_quantity": b.quantity, "confidence": min(b.score / 10, 1.0),
             "status": SignalStatus.ORDERED,
             # the scan's reasons, then the risk limit that sized the buy
             "reasons": json.dumps([*(reasons or {}).get(b.code, ()), f"bound by {b.bound_by.value}"],
                                   ensure_ascii=False)}
            for b in plan.buys
        ]  # fmt: skip
        intents = [
            {**mine, "key": intent_key(day, ref.user_id, ref.account_no, b.code, BUY_PURPOSE), "code": b.code,
             "side": Side.BUY, "purpose": BUY_PURPOSE, "quantity": b.quantity, "price": b.price,
             "trade_type": trade_type}
            for b in plan.buys
        ]  # fmt: skip
        skipped = [
            {**signal, "code": k.code, "name": k.name, "score": k.score, "current_price": k.price,
             "target_quantity": 0, "status": SignalStatus.SKIPPED, "skip_reason": k.reason,
             "skip_detail": k.detail[:255]}
            for k in plan.skipped
        ]  # fmt: skip
        return ordered, intents, skipped

    async def _record_plan(
        self,
        ref: AccountRef,
        day: date,
        plan: BuyPlan,
        scan_batch_id: int | None,
        reasons: Mapping[str, list[str]] | None = None,
    ) -> tuple[list[tuple[str, str]], list[tuple[int, str, int, int, IntentStatus]]] | None:
        """The account's signals and buy intents of the day, all or nothing, in one transaction of three
        statements whatever the plan's size; returns (skips, intents) as :meth:`_skips_and_intents` would
        read them. Should another run have planned the account at the same moment, the intents' unique
        keys refuse this plan and the other one stands (None: read it). On PostgreSQL the transaction runs
        from the event loop (asyncpg) and holds the plans of the other accounts prepared meanwhile
        (:func:`write_plans`); elsewhere it runs in a worker thread."""
        rows = self._plan_rows(ref, day, plan, scan_batch_id, reasons)
        try:
            grouped = self.db.grouped(write_plans, "account plans")
            if grouped is None:
                intent_ids = await self.db.run(self._insert_plan, *rows)
            else:  # with the plans of the accounts prepared meanwhile, in one transaction
                intent_ids = await grouped.submit(rows)
        except IntegrityError:
            if not await self.db.run(self._existing_intents, ref, day):
                raise
            log.info("%s/%s was planned by another run at the same time; its plan stands",
                     ref.user_id, ref.account_no)  # fmt: skip
            return None
        new = IntentStatus.NEW
        to_send = [(i, b.code, b.quantity, b.price, new) for i, b in zip(intent_ids, plan.buys, strict=True)]
        return [(k.code, k.reason.value) for k in plan.skipped], to_send

    def _insert_plan(
        self,
        ordered: list[dict[str, object]],
        intents: list[dict[str, object]],
        skipped: list[dict[str, object]],
    ) -> list[int]:
        """:meth:`_record_plan`'s transaction in this thread (SQLAlchemy): three statements at most."""
        intent_ids: list[int] = []
        with self.db.transaction() as conn:
            if ordered:
                signal_ids = conn.scalars(_INSERT_SIGNALS, ordered).all()
                linked = [{**i, "signal_id": sig} for i, sig in zip(intents, signal_ids, strict=True)]
                intent_ids = list(conn.scalars(_INSERT_INTENTS, linked).all())
            if skipped:
                conn.execute(sa.insert(TradingSignal), skipped)
        return intent_ids

    def _existing_intents(self, ref: AccountRef, day: date) -> bool:
        return bool(self._buy_intents(ref, day))

    def _buy_intents(self, ref: AccountRef, day: date) -> list[tuple[int, str, int, int, IntentStatus]]:
        with self.db.unit_of_work() as s:
            cols = (
                OrderIntentRow.id, OrderIntentRow.code, OrderIntentRow.quantity, OrderIntentRow.price,
                OrderIntentRow.status,
            )  # fmt: skip
            rows = s.execute(
                sa.select(*cols)
                .where(
                    OrderIntentRow.trading_day == day,
                    OrderIntentRow.account_no == ref.account_no,
                    OrderIntentRow.purpose == BUY_PURPOSE,
                )
                .order_by(OrderIntentRow.id)
            ).all()
        return [(r.id, r.code, r.quantity, r.price or 0, r.status) for r in rows]

    def _skips(self, ref: AccountRef, day: date) -> list[tuple[str, str]]:
        with self.db.unit_of_work() as s:
            rows = s.execute(
                sa.select(TradingSignal.code, TradingSignal.skip_reason).where(
                    TradingSignal.trading_day == day,
                    TradingSignal.account_no == ref.account_no,
                    TradingSignal.status == SignalStatus.SKIPPED,
                )
            ).all()
        return [(r.code, r.skip_reason.value if r.skip_reason else "") for r in rows]
