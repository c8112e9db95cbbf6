"""Reconciliation with the broker: orders, fills, holdings and cash; repair what can be repaired.

Order of work matters: unknown intents are resolved first, then fills are applied, and only then are
holdings compared, so a sell that filled a moment ago is not mistaken for shares sold by hand.

Shares sold outside the product (by hand, in the broker's app) are handled by following the broker: the
strategy's held quantity drops to what the broker holds (closing it as CLOSED_EXTERNALLY at zero) and the
difference is reported. No trade record is written for such a sale: its price is not known to us. Shares
held beyond what a strategy manages (bought by hand) are reported and left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime

import sqlalchemy as sa

from autotrade.domain.exits import HoldingSynced
from autotrade.domain.models import Side
from autotrade.domain.orders import NEEDS_RECONCILIATION, IntentEvent, IntentStatus, next_status
from autotrade.store.db import Database
from autotrade.store.models import OrderIntentRow
from autotrade.trading.buys import AccountRef
from autotrade.trading.exit_engine import ExitEngine, PendingSell
from autotrade.trading.orders import OrderService
from autotrade.trading.ports import AccountBroker, NotProcessed, OutcomeUnknown
from autotrade.trading.positions import PositionService, SyncResult, session_end
from autotrade.trading.resting_stops import RestingStops

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReconcileReport:
    user_id: str
    account_no: str
    cash: int = 0
    repaired: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    sync: SyncResult | None = None
    pending_sells: list[PendingSell] = field(default_factory=list)


class Reconciler:
    def __init__(
        self,
        db: Database,
        orders: OrderService,
        positions: PositionService,
        engine: ExitEngine,
        clock: Callable[[], datetime],
    ) -> None:
        self.db = db
        self.orders = orders
        self.positions = positions
        self.engine = engine
        self.clock = clock
        # Set when stops rest at the broker (resting_stop setting): each reconciliation places those missing.
        self.resting: RestingStops | None = None

    async def reconcile_account(
        self, ref: AccountRef, broker: AccountBroker, day: date, *, resume_sells: bool = True
    ) -> ReconcileReport:
        report = ReconcileReport(ref.user_id, ref.account_no)
        await self._resolve_intents(ref, broker, day, report, resume_sells)
        broker_orders = {o.order_no: o for o in await broker.orders_today()}
        report.sync = self.positions.apply_orders(ref, broker_orders, day)
        report.pending_sells.extend(report.sync.pending_sells)
        if report.sync.buy_fills or report.sync.sell_fills:
            report.repaired.append(
                f"applied {len(report.sync.buy_fills)} buy and {len(report.sync.sell_fills)} sell fill(s)"
            )
        self._unknown_orders(ref, day, broker_orders, report)
        view = await broker.account()
        report.cash = view.cash
        self._holdings(ref, {h.code: h.quantity for h in view.holdings}, report)
        if self.resting is not None:
            report.repaired.extend(await self.resting.place_missing(ref, broker, day))
        return report

    async def _resolve_intents(
        self, ref: AccountRef, broker: AccountBroker, day: date, report: ReconcileReport, resume_sells: bool
    ) -> None:
        with self.db.unit_of_work() as s:
            stuck = s.execute(
                sa.select(OrderIntentRow.id, OrderIntentRow.key, OrderIntentRow.status, OrderIntentRow.side)
                .where(
                    OrderIntentRow.account_no == ref.account_no,
                    OrderIntentRow.trading_day == day,
                    OrderIntentRow.status.in_([*NEEDS_RECONCILIATION, IntentStatus.NEW]),
                )
                .order_by(OrderIntentRow.id)
            ).all()
        for row in stuck:
            if row.status in NEEDS_RECONCILIATION:
                status = await self.orders.reconcile(row.id, broker)
                report.repaired.append(f"intent {row.key}: {row.status} -> {status}")
            if resume_sells and row.side.value == "SELL":
                try:
                    await self.orders.execute(row.id, broker)
                except (NotProcessed, OutcomeUnknown) as exc:
                    report.mismatches.append(f"intent {row.key} still unresolved: {type(exc).__name__}")
        self._close_what_can_no_longer_be_sent(ref, day, report)

    def _close_what_can_no_longer_be_sent(self, ref: AccountRef, day: date, report: ReconcileReport) -> None:
        """Intents that can no longer reach the broker end as EXPIRED with the reason, and are reported:
        a buy of ``day`` never sent (or proved never received) once its session is over; and anything of an
        earlier day still unsent or of unknown outcome, since the broker's inquiries only show today's
        orders (if one did reach the broker, its shares show up in the holdings check as unmanaged)."""
        now = self.clock()
        with self.db.unit_of_work() as s:
            rows = s.scalars(
                sa.select(OrderIntentRow).where(
                    OrderIntentRow.account_no == ref.account_no,
                    OrderIntentRow.trading_day <= day,
                    OrderIntentRow.status.in_([*NEEDS_RECONCILIATION, IntentStatus.NEW]),
                )
            ).all()
            for row in rows:
                if row.trading_day < day:
                    row.last_error = (
                        "outcome unknown when its day ended: check the broker's statement"
                        if row.status in NEEDS_RECONCILIATION
                        else "not sent: the session ended before the order could be sent"
                    )
                    report.mismatches.append(f"intent {row.key} of {row.trading_day}: {row.last_error}")
                elif (
                    row.side is Side.BUY
                    and row.status is IntentStatus.NEW
                    and now >= session_end(row.trade_type, row.trading_day)
                ):
                    row.last_error = "not sent: the buy session ended before the order could be sent"
                    report.mismatches.append(f"intent {row.key}: not sent before its session ended")
                else:
                    continue
                row.status = next_status(row.status, IntentEvent.EXPIRE)

    def _unknown_orders(
        self, ref: AccountRef, day: date, broker_orders: Mapping[str, object], report: ReconcileReport
    ) -> None:
        with self.db.unit_of_work() as s:
            ours = set(
                s.scalars(
                    sa.select(OrderIntentRow.order_no).where(
                        OrderIntentRow.account_no == ref.account_no, OrderIntentRow.trading_day == day
                    )
                ).all()
            )
        for order_no in sorted(set(broker_orders) - ours):
            report.mismatches.append(f"broker order {order_no} was not placed by autotrade")

    def _holdings(self, ref: AccountRef, broker_qty: dict[str, int], report: ReconcileReport) -> None:
        expected: dict[str, list[int]] = {}
        for key, strategy in list(self.engine.book):
            owner = self.engine.owner(key)
            if owner[1] != ref.account_no:
                continue
            expected.setdefault(strategy.code, []).append(key)
        for code, keys in expected.items():
            have = broker_qty.get(code, 0)
            strategies = [self.engine.book.get(k) for k in keys]
            held = sum(st.held for st in strategies)
            working = sum(sum(st.in_flight.values()) for st in strategies)
            if have >= held - working:
                if have > held:
                    report.mismatches.append(f"{code}: broker holds {have}, strategies manage {held}")
                continue
            # Sold outside the product: follow the broker, newest strategies first. Shares being sold by our
            # own working orders are not counted: their fills will arrive as fills.
            external = held - working - have
            now = self.clock()
            for key in sorted(keys, reverse=True):
                st = self.engine.book.get(key) if key in self.engine.book else None
                if st is None or external <= 0:
                    continue
                cut = min(external, st.free)
                if cut > 0:
                    report.pending_sells.extend(self.engine.apply(key, HoldingSynced(st.held - cut, now)))
                    external -= cut
            report.repaired.append(f"{code}: {held - working - have} share(s) sold outside autotrade")
        for code, qty in broker_qty.items():
            if qty > 0 and code not in expected:
                report.mismatches.append(f"{code}: {qty} share(s) held that no strategy manages")
