"""The specification's operating indicators of one trading day, from the database (every process writes
there, so the report's process sees the whole product). How each is measured, and what is approximate:

- uptime (>= 99%): the share of the continuous session's 5-minute slots (09:00-15:30 KST: 78 slots) in
  which the gateway logged at least one allowed broker request. The intraday flow reconciles every
  ``reconcile_every_minutes`` (5), so a slot without any request means the product was not reaching the
  broker. Approximate: resolution 5 minutes; the price watch's WebSocket feed does not pass the gateway, so
  a watch alive while every reconciliation failed counts as down. None on a day nobody traded (no request).
- fill rate (>= 95%): shares filled / shares ordered over the day's order intents that reached the broker
  (an order number). After-hours-at-close buys fill only against opposing orders, so a partly filled
  evening buy lowers it by design (the simulator fills about 85% there).
- error rate (<= 1%): (refused gateway requests + the day's intents that ended REJECTED, are still of
  unknown outcome, or recorded an error) / (gateway requests). Approximate: a broker error that the client
  retried successfully leaves no row.
- average broker response time (<= 2 s): the day's broker REST calls (answered ones; a call without an
  answer has no time) as the broker client timed them, request sent to answer read, summed per TR in
  ``broker_latency`` by every process that trades (autotrade/ops/worker_metrics.py). Approximate: a process
  killed outright loses its last few seconds of calls; the price feed's WebSocket ticks are not calls.
- kill-switch reaction time (<= 60 s): for each security event of the day that disabled a key, the seconds
  from the account's last gateway request at or before the event (the request that tripped the rule) to the
  event; the worst of the day.
- KMS calls saved (no target; the design's aim is at most one Decrypt per key per day): allowed gateway
  requests minus the keys whose broker token was issued that day (a token issue is the only Decrypt a key
  needs while its token is cached). Approximate: only each key's latest token write is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa

from autotrade.domain.krx import KST
from autotrade.domain.orders import IntentStatus
from autotrade.store.db import Database
from autotrade.store.models import AccessLog, BrokerLatency, BrokerTokenCache, OrderIntentRow, SecurityEvent

SESSION = (time(9, 0), time(15, 30))
SLOT = timedelta(minutes=5)
UNRESOLVED = (IntentStatus.REJECTED, IntentStatus.UNKNOWN, IntentStatus.SUBMITTING)


@dataclass(frozen=True, slots=True)
class Indicator:
    name: str
    value: float | None  # None: not measured, or nothing to measure that day
    target: float | None
    higher_is_better: bool
    unit: str
    basis: str  # the counts behind the value

    @property
    def met(self) -> bool | None:
        if self.value is None or self.target is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def shown(self) -> str:
        value = "-" if self.value is None else f"{self.value:,.2f}{self.unit}"
        if self.target is None:
            return value
        return f"{value} (target {'≥' if self.higher_is_better else '≤'} {self.target:g}{self.unit})"


def operating_indicators(db: Database, day: date) -> list[Indicator]:
    start = datetime.combine(day, time(0), tzinfo=KST)
    end = start + timedelta(days=1)
    opens, closes = (datetime.combine(day, t, tzinfo=KST) for t in SESSION)
    with db.unit_of_work() as s:
        requests = s.execute(
            sa.select(
                sa.func.count(AccessLog.id), sa.func.count(AccessLog.id).filter(AccessLog.allowed.is_(False))
            ).where(AccessLog.at >= start, AccessLog.at < end)
        ).one()
        in_session = s.scalars(
            sa.select(AccessLog.at).where(
                AccessLog.at >= opens, AccessLog.at < closes, AccessLog.allowed.is_(True)
            )
        ).all()
        intents = s.execute(
            sa.select(OrderIntentRow.quantity, OrderIntentRow.filled_quantity, OrderIntentRow.order_no,
                      OrderIntentRow.status, OrderIntentRow.last_error)
            .where(OrderIntentRow.trading_day == day)
        ).all()  # fmt: skip
        kills = s.execute(
            sa.select(SecurityEvent.at, SecurityEvent.account_no, SecurityEvent.user_id)
            .where(SecurityEvent.at >= start, SecurityEvent.at < end,
                   SecurityEvent.action_taken.contains("DISABLED"))
        ).all()  # fmt: skip
        reactions = []
        for at, account, user in kills:
            who = AccessLog.account_no == account if account else AccessLog.user_id == user
            tripped = s.scalar(sa.select(sa.func.max(AccessLog.at)).where(who, AccessLog.at <= at))
            if tripped is not None:
                reactions.append((at - tripped).total_seconds())
        issued = s.scalar(
            sa.select(sa.func.count()).select_from(BrokerTokenCache)
            .where(BrokerTokenCache.updated_at >= start, BrokerTokenCache.updated_at < end)
        ) or 0  # fmt: skip
        calls, total_ms, longest_ms = s.execute(
            sa.select(sa.func.sum(BrokerLatency.calls), sa.func.sum(BrokerLatency.total_ms),
                      sa.func.max(BrokerLatency.max_ms))
            .where(BrokerLatency.trading_day == day)
        ).one()  # fmt: skip
    total, refused = int(requests[0]), int(requests[1])
    calls, total_ms, longest_ms = int(calls or 0), int(total_ms or 0), int(longest_ms or 0)
    slots_total = int((closes - opens) / SLOT)
    slots = {int((at - opens) / SLOT) for at in in_session}
    sent = [i for i in intents if i.order_no]
    ordered = sum(i.quantity for i in sent)
    filled = sum(i.filled_quantity for i in sent)
    errors = sum(1 for i in intents if i.status in UNRESOLVED or i.last_error)
    allowed = total - refused
    return [
        Indicator("uptime", _pct(len(slots), slots_total) if total else None, 99.0, True, "%",
                  f"{len(slots)} of {slots_total} session slots of 5 minutes with a broker request"),
        Indicator("fill rate", _pct(filled, ordered), 95.0, True, "%",
                  f"{filled:,} of {ordered:,} shares ordered at the broker ({len(sent)} orders)"),
        Indicator("error rate", _pct(refused + errors, total), 1.0, False, "%",
                  f"{refused} refused of {total:,} gateway requests; {errors} orders in error"),
        Indicator("average broker response time", round(total_ms / calls / 1000, 3) if calls else None, 2.0,
                  False, " s", f"{calls:,} broker calls, the longest {longest_ms / 1000:,.2f} s"),
        Indicator("kill-switch reaction time", max(reactions) if reactions else None, 60.0, False, " s",
                  f"{len(reactions)} keys disabled"),
        Indicator("KMS calls saved", float(max(0, allowed - issued)) if total else None, None, True, "",
                  f"{allowed:,} allowed requests, {issued} broker tokens issued (one Decrypt each)"),
    ]  # fmt: skip


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 2) if whole else None


def missed(indicators: Sequence[Indicator]) -> list[Indicator]:
    return [i for i in indicators if i.met is False]


def indicators_markdown(indicators: Sequence[Indicator]) -> str:
    lines = ["## Operating indicators", "", "| indicator | value | met | basis |", "|---|---|---|---|"]
    for i in indicators:
        met = {True: "yes", False: "**NO**", None: "-"}[i.met]
        lines.append(f"| {i.name} | {i.shown()} | {met} | {i.basis} |")
    return "\n".join(lines)
