"""Resting stops: a stop-limit sell at the broker for every position, kept in step with the exit.

Protocol, per strategy (``resting_stop`` setting on; the states are the exit's, see
:mod:`autotrade.domain.exits`):

1. Place. At every reconciliation from 08:30 until the close (so after the buy filled, and again each
   morning, since the broker ends it with the day) a strategy with nothing resting, nothing being sold and
   shares to cover decides to rest a stop (NONE -> PLACING). Its order intent (STOP_LIMIT, ``stop_price``
   the stop tier, ``price`` the limit ``resting_stop_limit_ticks`` ticks below) is written, then sent by the
   exactly-once order protocol. The answer moves it to RESTING, or back to NONE when refused; an unknown
   outcome stays PLACING until a later reconciliation resolves the intent.
2. Out of a market sell's way. Before the order service claims a market sell of a strategy
   (:meth:`RestingStops.before_send`), the exit says how many resting shares must go (RESTING -> REDUCING):
   all of them before a take-profit or a market stop, the preserve's share before the preserve. A cancel of
   that many shares (kt10003 ``cncl_qty``; 0 = all) is sent, then the broker's orders are read and applied
   to every intent (a fill of the resting stop first closes or shrinks the position). Only when what still
   rests is within the target does the sell go; otherwise NotProcessed: the intent stays NEW and the next
   reconciliation resumes it. A sell the resting stop made pointless is shrunk to what is left, or ends
   EXPIRED "not sent: sold by the resting stop".
3. Fills. The resting order's fills and its end are applied with every other order's
   (:class:`~autotrade.trading.positions.PositionService`), so a fill at the broker while nothing watches
   closes the position at the next reconciliation.
4. Day end. A resting intent of an earlier day still open in our books ended with its day: EXPIRED.

Why a partial cancel and not kt10002 to shrink it: a Kiwoom modify moves ``mdfy_qty`` shares to a new price
under a new order number and leaves the rest working at the old one (as the simulator models it), so it
cannot make an order smaller; kt10003 with ``cncl_qty`` does, and keeps the order number.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime, time

import sqlalchemy as sa

from autotrade.config import Settings
from autotrade.domain.calendar import hours_of, is_trading_day
from autotrade.domain.exits import (
    AT_BROKER,
    RestingEnded,
    RestingNotPlaced,
    RestingPlaced,
    RestingReduced,
    RestingStatus,
)
from autotrade.domain.krx import KST
from autotrade.domain.models import Side, Tier
from autotrade.domain.orders import NEEDS_RECONCILIATION, IntentEvent, IntentStatus, intent_key, next_status
from autotrade.store.db import Database
from autotrade.store.models import ConditionalOrder, OrderIntentRow
from autotrade.store.repositories import Intents
from autotrade.trading.buys import AccountRef
from autotrade.trading.exit_engine import ExitEngine, is_resting, resting_purpose
from autotrade.trading.orders import OrderService
from autotrade.trading.ports import (
    AccountBroker,
    BrokerOrderState,
    BrokerUnavailable,
    NotProcessed,
    OrderRejected,
    OrderType,
    OutcomeUnknown,
)
from autotrade.trading.positions import PositionService

log = logging.getLogger(__name__)

# Kiwoom accepts regular orders from 08:30 (queued for the opening auction) until the close.
FIRST_ORDER_TIME = time(8, 30)
WORKING = (IntentStatus.ACCEPTED, IntentStatus.PARTIALLY_FILLED)
SOLD_BY_RESTING_STOP = "not sent: sold by the resting stop"
RESTING_INTENT = OrderIntentRow.trade_type == OrderType.STOP_LIMIT.value


class RestingStops:
    def __init__(
        self,
        db: Database,
        engine: ExitEngine,
        orders: OrderService,
        positions: PositionService,
        settings: Settings,
        clock: Callable[[], datetime],
    ) -> None:
        self.db = db
        self.engine = engine
        self.orders = orders
        self.positions = positions
        self.settings = settings
        self.clock = clock

    # --- 1. place ---

    async def place_missing(self, ref: AccountRef, broker: AccountBroker, day: date) -> list[str]:
        """Rest a stop for every position of the account that has none; returns what happened, per stock."""
        self._expire_earlier(ref, day)
        now = self.clock()
        if not self._can_order(day, now):
            return []
        done: list[str] = []
        for sid in self._strategies_of(ref):
            if sid not in self.engine.book:
                continue
            st = self.engine.book.get(sid)
            if st.resting_status is RestingStatus.PLACING:
                await self._settle_placing(sid, broker)
                continue
            if st.resting_status in AT_BROKER and self._today_resting(sid, WORKING) is None:
                self.engine.apply(sid, RestingEnded(now))  # an earlier day's, not seen ending at the close
                st = self.engine.book.get(sid)
            if st.is_closed or any(st.in_flight.values()):
                continue  # a market sell is on its way: the stop rests after it
            order = st.rest_stop(self.settings.resting_stop_limit_ticks, now)
            if order is None:
                continue
            with self.db.unit_of_work() as s:
                placed_before = s.scalar(
                    sa.select(sa.func.count()).where(OrderIntentRow.strategy_id == sid, RESTING_INTENT)
                )
                purpose = resting_purpose(sid, 1 + (placed_before or 0))
                Intents(s).create_once(
                    OrderIntentRow(
                        key=intent_key(day, ref.user_id, ref.account_no, st.code, purpose), trading_day=day,
                        user_id=ref.user_id, account_no=ref.account_no, code=st.code, side=Side.SELL,
                        purpose=purpose, quantity=order.quantity, price=order.limit, stop_price=order.trigger,
                        trade_type=OrderType.STOP_LIMIT.value, strategy_id=sid, tier=Tier.STOP_LOSS,
                        status=IntentStatus.NEW,
                    )
                )  # fmt: skip
            log.info("%s %s: resting stop %d shares, trigger %d limit %d", ref.account_no, st.code,
                     order.quantity, order.trigger, order.limit)  # fmt: skip
            done.append(f"{st.code}: {await self._settle_placing(sid, broker)}")
        return done

    async def _settle_placing(self, sid: int, broker: AccountBroker) -> str:
        """Drive the strategy's resting intent of today to the broker (or find what became of it) and tell the
        exit: placed, refused, or still unknown (it stays PLACING)."""
        row = self._today_resting(sid, None)
        if row is None:
            self.engine.apply(sid, RestingNotPlaced(self.clock()))
            return "not placed"
        try:
            status = await self.orders.execute(row.id, broker)
        except (NotProcessed, OutcomeUnknown) as exc:
            return f"not confirmed yet ({type(exc).__name__})"
        if status in WORKING:
            row = self._today_resting(sid, None) or row
            self.engine.apply(sid, RestingPlaced(row.quantity - row.filled_quantity, self.clock()))
            with self.db.unit_of_work() as s:
                s.execute(
                    sa.update(ConditionalOrder)
                    .where(ConditionalOrder.strategy_id == sid, ConditionalOrder.order_type == Tier.STOP_LOSS)
                    .values(order_no=row.order_no)
                )
            return f"resting as order {row.order_no}"
        if status in NEEDS_RECONCILIATION or status is IntentStatus.NEW:
            return f"not confirmed yet ({status})"
        # Refused, or already over (filled or ended) before we looked: the fills path has applied it.
        st = self.engine.book.get(sid) if sid in self.engine.book else None
        if st is not None and st.resting_status is RestingStatus.PLACING:
            self.engine.apply(sid, RestingNotPlaced(self.clock()))
        return f"not resting ({status})"

    # --- 2. out of a market sell's way ---

    async def before_send(self, intent_id: int, broker: AccountBroker) -> None:
        """The order service's hook: clear the resting stop out of a market sell's way (see the protocol)."""
        with self.db.unit_of_work() as s:
            row = s.get_one(OrderIntentRow, intent_id)
            if row.status is not IntentStatus.NEW or row.side is not Side.SELL or row.strategy_id is None:
                return
            if is_resting(row) or row.tier is None:
                return
            sid, tier, day = row.strategy_id, row.tier, row.trading_day
            ref = AccountRef(row.user_id, row.account_no)
        if sid not in self.engine.book:
            self.engine.load_one(sid)
        for _ in range(3):
            if sid not in self.engine.book or self.engine.book.get(sid).is_closed:
                break
            st = self.engine.book.get(sid)
            if st.resting_status is RestingStatus.PLACING:
                await self._withdraw_placing(sid, broker)
                continue
            cancel = st.reduce_resting(self.clock())
            if cancel is None:
                break
            resting = self._today_resting(sid, WORKING)
            if resting is None or resting.order_no is None:
                raise NotProcessed(f"strategy {sid}: the resting stop is not in our books")
            try:
                await broker.cancel(resting.order_no, resting.code, cancel)
            except OrderRejected:
                pass  # no longer working (filled or expired): the broker's orders say which
            except (NotProcessed, OutcomeUnknown) as exc:
                raise NotProcessed(f"strategy {sid}: resting stop not cancelled yet ({exc})") from None
            await self._apply_broker_orders(ref, broker, day, sid, resting.id, resting.order_no)
        else:
            raise NotProcessed(f"strategy {sid}: the resting stop is still in the way")
        self._fit_sell(intent_id, sid, tier)

    async def _apply_broker_orders(
        self, ref: AccountRef, broker: AccountBroker, day: date, sid: int, resting_id: int, order_no: str
    ) -> None:
        try:
            orders = {o.order_no: o for o in await broker.orders_today()}
        except BrokerUnavailable as exc:
            raise NotProcessed(f"strategy {sid}: cannot read the broker's orders ({exc})") from None
        self.positions.apply_orders(ref, orders, day)  # the resting stop's fills and end, every other order's
        order = orders.get(order_no)
        if order is None or order.state is not BrokerOrderState.OPEN or sid not in self.engine.book:
            return
        st = self.engine.book.get(sid)
        if st.resting_status is RestingStatus.REDUCING and order.open_quantity <= st.resting:
            with self.db.unit_of_work() as s:
                row = s.get_one(OrderIntentRow, resting_id)
                row.quantity = order.filled_quantity + order.open_quantity  # what the order can still fill to
            self.engine.apply(sid, RestingReduced(order.open_quantity, self.clock()))

    async def _withdraw_placing(self, sid: int, broker: AccountBroker) -> None:
        """A resting stop still being placed when a market sell must go: one never sent is withdrawn; one sent
        is looked for at the broker first (then reduced like any other)."""
        row = self._today_resting(sid, None)
        if row is None:
            self.engine.apply(sid, RestingNotPlaced(self.clock()))
            return
        if row.status in NEEDS_RECONCILIATION:
            if await self.orders.reconcile(row.id, broker) in NEEDS_RECONCILIATION:
                raise NotProcessed(f"strategy {sid}: the resting stop's outcome is not known yet")
            row = self._today_resting(sid, None) or row
        if row.status is IntentStatus.NEW:  # never sent, or proved never received: it is not sent now
            with self.db.unit_of_work() as s:
                r = s.get_one(OrderIntentRow, row.id)
                if r.status is IntentStatus.NEW:
                    r.status = next_status(r.status, IntentEvent.EXPIRE)
                    r.last_error = "withdrawn: a market sell of the position went first"
            self.engine.apply(sid, RestingNotPlaced(self.clock()))
            return
        await self._settle_placing(sid, broker)  # at the broker (or over): the exit learns which

    def _fit_sell(self, intent_id: int, sid: int, tier: Tier) -> None:
        """A market sell decided before the resting stop sold shares sends only what the exit still sells."""
        st = self.engine.book.get(sid) if sid in self.engine.book else None
        left = 0 if st is None or st.is_closed else st.in_flight[tier]
        with self.db.unit_of_work() as s:
            row = s.get_one(OrderIntentRow, intent_id)
            if row.status is not IntentStatus.NEW or left >= row.quantity:
                return
            if left <= 0:
                row.status = next_status(row.status, IntentEvent.EXPIRE)
                row.last_error = SOLD_BY_RESTING_STOP
            else:
                row.quantity = left
            log.info("sell %s cut to %d: the resting stop sold shares first", row.key, max(left, 0))

    # --- helpers ---

    def _can_order(self, day: date, now: datetime) -> bool:
        local = now.astimezone(KST)
        if local.date() != day or not is_trading_day(day):
            return False
        return FIRST_ORDER_TIME <= local.time() < hours_of(day).close

    def _strategies_of(self, ref: AccountRef) -> list[int]:
        return sorted(k for k, _ in self.engine.book if self.engine.owner(k)[1] == ref.account_no)

    def _today_resting(self, sid: int, statuses: tuple[IntentStatus, ...] | None) -> OrderIntentRow | None:
        """The strategy's latest resting intent of today (in ``statuses`` when given), detached."""
        today = self.engine.today()
        with self.db.unit_of_work() as s:
            q = sa.select(OrderIntentRow).where(
                OrderIntentRow.strategy_id == sid,
                RESTING_INTENT,
                OrderIntentRow.trading_day == today,
            )
            if statuses is not None:
                q = q.where(OrderIntentRow.status.in_(list(statuses)))
            row = s.scalars(q.order_by(OrderIntentRow.id.desc())).first()
            if row is not None:
                s.expunge(row)
            return row

    def _expire_earlier(self, ref: AccountRef, day: date) -> None:
        """Resting intents of an earlier day still working in our books ended with their day (day orders)."""
        with self.db.unit_of_work() as s:
            rows = s.scalars(
                sa.select(OrderIntentRow).where(
                    OrderIntentRow.account_no == ref.account_no,
                    OrderIntentRow.trading_day < day,
                    RESTING_INTENT,
                    OrderIntentRow.status.in_(list(WORKING)),
                )
            ).all()
            for row in rows:
                row.status = next_status(row.status, IntentEvent.EXPIRE)
                row.last_error = "a day order: ended with its day"
