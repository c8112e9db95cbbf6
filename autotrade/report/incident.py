"""The incident report of one account: everything that happened to it since a moment, and the money at risk.

"Damage scope within 5 minutes" (the specification): an operator names an account and a time and gets, from
the database alone (no broker call, so it works while the broker or the gateway is the incident):

- every gateway request of the account (``access_log``), and of those the refusals;
- every kill-switch and security decision (``security_events``);
- every order intent of a trading day since then or changed since then (``order_intents``), every fill and
  every trade record;
- the money at risk now: each open position (held shares) valued at its last known price, the newest fill of
  that stock in the ledger (any account: the product's latest traded price), or at its entry price when the
  ledger has none; and every buy whose outcome is not final: written but unsent (NEW), sent without an
  answer (SUBMITTING, UNKNOWN: it may be at the broker) or working at the broker (ACCEPTED, partly filled),
  its unfilled shares at its limit price, else the last known price.

``incident_report`` only queries; ``markdown`` and ``as_json`` only render.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from autotrade.domain.krx import KST
from autotrade.domain.models import Side
from autotrade.domain.orders import IntentStatus
from autotrade.store.db import Database
from autotrade.store.models import (
    AccessLog,
    Account,
    FillRow,
    OrderIntentRow,
    SecurityEvent,
    ThreeTierStrategy,
    TradeRecordRow,
)

OPEN_BUY = (
    IntentStatus.NEW,
    IntentStatus.SUBMITTING,
    IntentStatus.UNKNOWN,
    IntentStatus.ACCEPTED,
    IntentStatus.PARTIALLY_FILLED,
)


class UnknownAccount(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class OpenPosition:
    strategy_id: int
    code: str
    name: str
    held: int
    entry_price: int
    last_price: int
    priced_from: str  # "fill <time>" or "entry"
    stop_loss_price: int
    status: str

    @property
    def value(self) -> int:
        return self.held * self.last_price

    @property
    def cost(self) -> int:
        return self.held * self.entry_price

    @property
    def unrealized(self) -> int:
        return self.value - self.cost

    @property
    def loss_to_stop(self) -> int:
        """What selling everything at the stop price would lose from the last price (0 when already below)."""
        return max(0, self.held * (self.last_price - self.stop_loss_price))


@dataclass(frozen=True, slots=True)
class OpenBuy:
    intent_id: int
    key: str
    code: str
    status: str
    unfilled: int
    price: int
    priced_from: str  # "limit", "fill <time>", "signal" or "unknown"

    @property
    def amount(self) -> int:
        return self.unfilled * self.price


@dataclass
class MoneyAtRisk:
    positions: list[OpenPosition]
    buys: list[OpenBuy]

    @property
    def positions_value(self) -> int:
        return sum(p.value for p in self.positions)

    @property
    def positions_cost(self) -> int:
        return sum(p.cost for p in self.positions)

    @property
    def loss_to_stops(self) -> int:
        return sum(p.loss_to_stop for p in self.positions)

    @property
    def buys_amount(self) -> int:
        return sum(b.amount for b in self.buys)

    @property
    def total(self) -> int:
        """Open positions at their last price plus buys of unknown or open outcome."""
        return self.positions_value + self.buys_amount


@dataclass
class Incident:
    account_no: str
    user_id: str
    since: datetime
    generated_at: datetime
    requests: list[dict[str, Any]]
    security_events: list[dict[str, Any]]
    orders: list[dict[str, Any]]
    fills: list[dict[str, Any]]
    trades: list[dict[str, Any]]
    at_risk: MoneyAtRisk
    refusals: list[dict[str, Any]] = field(default_factory=list)


def incident_report(db: Database, account_no: str, since: datetime, now: datetime | None = None) -> Incident:
    """Everything of ``account_no`` since ``since`` (aware; naive means KST) and its money at risk now."""
    if since.tzinfo is None:
        since = since.replace(tzinfo=KST)
    with db.unit_of_work() as s:
        owner = s.scalar(sa.select(Account.user_id).where(Account.account_no == account_no))
        if owner is None:
            raise UnknownAccount(account_no)
        mine = sa.or_(
            AccessLog.account_no == account_no,
            sa.and_(AccessLog.account_no.is_(None), AccessLog.user_id == owner),
        )
        requests = [
            {
                "id": r.id,
                "at": _t(r.at),
                "action": r.action,
                "allowed": r.allowed,
                "reason": r.reason,
                "order_ref": r.order_ref,
                "origin": r.origin,
                "amount": r.amount,
                "token_id": r.token_id,
            }
            for r in s.scalars(
                sa.select(AccessLog).where(AccessLog.at >= since, mine).order_by(AccessLog.at, AccessLog.id)
            )
        ]
        theirs = sa.or_(
            SecurityEvent.account_no == account_no,
            sa.and_(SecurityEvent.account_no.is_(None), SecurityEvent.user_id == owner),
        )
        events = [
            {
                "id": e.id,
                "at": _t(e.at),
                "rule": e.rule,
                "severity": e.severity,
                "detail": e.detail,
                "action_taken": e.action_taken,
            }
            for e in s.scalars(
                sa.select(SecurityEvent)
                .where(SecurityEvent.at >= since, theirs)
                .order_by(SecurityEvent.at, SecurityEvent.id)
            )
        ]
        intents = s.scalars(
            sa.select(OrderIntentRow)
            .where(
                OrderIntentRow.account_no == account_no,
                sa.or_(
                    OrderIntentRow.trading_day >= since.astimezone(KST).date(),
                    OrderIntentRow.updated_at >= since,
                ),
            )
            .order_by(OrderIntentRow.created_at, OrderIntentRow.id)
        ).all()
        orders = [
            {
                "id": o.id,
                "key": o.key,
                "trading_day": o.trading_day.isoformat(),
                "code": o.code,
                "side": o.side.value,
                "purpose": o.purpose,
                "quantity": o.quantity,
                "price": o.price,
                "trade_type": o.trade_type,
                "status": o.status.value,
                "order_no": o.order_no,
                "filled_quantity": o.filled_quantity,
                "filled_amount": o.filled_amount,
                "attempts": o.attempts,
                "last_error": o.last_error,
                "created_at": _t(o.created_at),
                "updated_at": _t(o.updated_at),
            }
            for o in intents
        ]
        fills = [
            {
                "id": f.id,
                "at": _t(f.executed_at),
                "code": f.code,
                "side": f.side.value,
                "quantity": f.quantity,
                "price": f.price,
                "amount": f.quantity * f.price,
                "fee": f.fee,
                "tax": f.tax,
                "order_no": f.order_no,
                "fill_no": f.fill_no,
            }
            for f in s.scalars(
                sa.select(FillRow)
                .where(FillRow.account_no == account_no, FillRow.executed_at >= since)
                .order_by(FillRow.executed_at, FillRow.id)
            )
        ]
        trades = [
            {
                "id": t.id,
                "at": _t(t.executed_at),
                "code": t.code,
                "name": t.name,
                "action": t.action.value,
                "quantity": t.quantity,
                "price": t.price,
                "amount": t.amount,
                "fee": t.fee,
                "tax": t.tax,
                "profit_loss": t.profit_loss,
                "exit_reason": t.exit_reason.value if t.exit_reason else None,
            }
            for t in s.scalars(
                sa.select(TradeRecordRow)
                .where(TradeRecordRow.account_no == account_no, TradeRecordRow.executed_at >= since)
                .order_by(TradeRecordRow.executed_at, TradeRecordRow.id)
            )
        ]
        held = s.scalars(
            sa.select(ThreeTierStrategy)
            .where(ThreeTierStrategy.account_no == account_no, ThreeTierStrategy.held_quantity > 0)
            .order_by(ThreeTierStrategy.id)
        ).all()
        open_buys = s.scalars(
            sa.select(OrderIntentRow)
            .where(
                OrderIntentRow.account_no == account_no,
                OrderIntentRow.side == Side.BUY,
                OrderIntentRow.status.in_(OPEN_BUY),
            )
            .order_by(OrderIntentRow.id)
        ).all()
        codes = sorted({p.code for p in held} | {b.code for b in open_buys})
        last = _last_fill_prices(s, codes)
        signal_prices = _signal_prices(s, [b.signal_id for b in open_buys if b.signal_id])
        positions = []
        for p in held:
            price, source = last.get(p.code, (p.entry_price, "entry"))
            positions.append(
                OpenPosition(
                    p.id,
                    p.code,
                    p.name,
                    p.held_quantity,
                    p.entry_price,
                    price,
                    source,
                    p.stop_loss_price,
                    p.status.value,
                )
            )
        buys = []
        for b in open_buys:
            if b.price:
                price, source = b.price, "limit"
            elif b.code in last:
                price, source = last[b.code]
            elif b.signal_id in signal_prices:
                price, source = signal_prices[b.signal_id], "signal"
            else:
                price, source = 0, "unknown"
            buys.append(
                OpenBuy(b.id, b.key, b.code, b.status.value, b.quantity - b.filled_quantity, price, source)
            )
    return Incident(
        account_no=account_no,
        user_id=owner,
        since=since,
        generated_at=now or datetime.now(KST),
        requests=requests,
        security_events=events,
        orders=orders,
        fills=fills,
        trades=trades,
        at_risk=MoneyAtRisk(positions, buys),
        refusals=[r for r in requests if not r["allowed"]],
    )


def _last_fill_prices(s: Any, codes: Sequence[str]) -> dict[str, tuple[int, str]]:
    if not codes:
        return {}
    newest = (
        sa.select(FillRow.code, sa.func.max(FillRow.executed_at).label("at"))
        .where(FillRow.code.in_(list(codes)))
        .group_by(FillRow.code)
        .subquery()
    )
    rows = s.execute(
        sa.select(FillRow.code, FillRow.price, FillRow.executed_at, FillRow.id)
        .join(newest, sa.and_(FillRow.code == newest.c.code, FillRow.executed_at == newest.c.at))
        .order_by(FillRow.id)
    ).all()
    return {code: (price, f"fill {_t(at)}") for code, price, at, _ in rows}  # the last id of a tie wins


def _signal_prices(s: Any, ids: Sequence[int | None]) -> dict[int | None, int]:
    from autotrade.store.models import TradingSignal

    if not ids:
        return {}
    rows = s.execute(
        sa.select(TradingSignal.id, TradingSignal.current_price).where(TradingSignal.id.in_(ids))
    )
    return {i: p for i, p in rows}


def _t(at: datetime) -> str:
    return at.astimezone(KST).isoformat(timespec="seconds")


def as_json(i: Incident) -> dict[str, Any]:
    r = i.at_risk
    return {
        "account_no": i.account_no,
        "user_id": i.user_id,
        "since": _t(i.since),
        "generated_at": _t(i.generated_at),
        "counts": {
            "requests": len(i.requests),
            "refusals": len(i.refusals),
            "security_events": len(i.security_events),
            "orders": len(i.orders),
            "fills": len(i.fills),
            "trades": len(i.trades),
        },
        "money_at_risk": {
            "total": r.total,
            "positions_value": r.positions_value,
            "positions_cost": r.positions_cost,
            "unrealized": r.positions_value - r.positions_cost,
            "loss_to_stops": r.loss_to_stops,
            "buys_amount": r.buys_amount,
            "positions": [
                asdict(p) | {"value": p.value, "cost": p.cost, "loss_to_stop": p.loss_to_stop}
                for p in r.positions
            ],
            "buys": [asdict(b) | {"amount": b.amount} for b in r.buys],
        },
        "requests": i.requests,
        "refusals": i.refusals,
        "security_events": i.security_events,
        "orders": i.orders,
        "fills": i.fills,
        "trades": i.trades,
    }


def markdown(i: Incident) -> str:
    r = i.at_risk
    out = [
        f"# Incident report: account {i.account_no} ({i.user_id})",
        "",
        f"Since {_t(i.since)}, generated {_t(i.generated_at)}.",
        "",
        f"- gateway requests {len(i.requests):,} (refused {len(i.refusals):,}); security events "
        f"{len(i.security_events):,}; orders {len(i.orders):,}; fills {len(i.fills):,}; "
        f"trades {len(i.trades):,}",
        f"- **money at risk {r.total:,}원**: open positions {r.positions_value:,}원 at their last price "
        f"(cost {r.positions_cost:,}원, unrealized {r.positions_value - r.positions_cost:+,}원, "
        f"{r.loss_to_stops:,}원 more if every stop fills at its price); buys open or of unknown outcome "
        f"{r.buys_amount:,}원",
        "",
    ]
    out += _table(
        "Open positions",
        [
            "strategy",
            "stock",
            "held",
            "entry",
            "last price",
            "priced from",
            "value",
            "stop",
            "loss to stop",
            "status",
        ],
        [
            [
                p.strategy_id,
                f"{p.name} ({p.code})",
                f"{p.held:,}",
                f"{p.entry_price:,}",
                f"{p.last_price:,}",
                p.priced_from,
                f"{p.value:,}",
                f"{p.stop_loss_price:,}",
                f"{p.loss_to_stop:,}",
                p.status,
            ]
            for p in r.positions
        ],
    )
    out += _table(
        "Buys open or of unknown outcome",
        ["intent", "stock", "status", "unfilled", "price", "priced from", "amount"],
        [
            [b.key, b.code, b.status, f"{b.unfilled:,}", f"{b.price:,}", b.priced_from, f"{b.amount:,}"]
            for b in r.buys
        ],
    )
    out += _table(
        "Security events (kill switch)",
        ["at", "rule", "severity", "action", "detail"],
        [[e["at"], e["rule"], e["severity"], e["action_taken"], e["detail"]] for e in i.security_events],
    )
    out += _table(
        "Refused requests",
        ["at", "action", "reason", "origin", "order"],
        [[q["at"], q["action"], q["reason"], q["origin"], q["order_ref"]] for q in i.refusals],
    )
    out += _table(
        "Orders",
        [
            "created",
            "key",
            "side",
            "qty",
            "price",
            "type",
            "status",
            "order no",
            "filled",
            "filled amount",
            "error",
        ],
        [
            [
                o["created_at"],
                o["key"],
                o["side"],
                f"{o['quantity']:,}",
                _n(o["price"]),
                o["trade_type"],
                o["status"],
                o["order_no"],
                f"{o['filled_quantity']:,}",
                f"{o['filled_amount']:,}",
                o["last_error"],
            ]
            for o in i.orders
        ],
    )
    out += _table(
        "Fills",
        ["at", "stock", "side", "qty", "price", "amount", "fee", "tax", "order no"],
        [
            [
                f["at"],
                f["code"],
                f["side"],
                f"{f['quantity']:,}",
                f"{f['price']:,}",
                f"{f['amount']:,}",
                f"{f['fee']:,}",
                f"{f['tax']:,}",
                f["order_no"],
            ]
            for f in i.fills
        ],
    )
    out += _table(
        "Trades",
        ["at", "stock", "action", "qty", "price", "amount", "P&L", "exit"],
        [
            [
                t["at"],
                f"{t['name']} ({t['code']})",
                t["action"],
                f"{t['quantity']:,}",
                f"{t['price']:,}",
                f"{t['amount']:,}",
                _n(t["profit_loss"], signed=True),
                t["exit_reason"],
            ]
            for t in i.trades
        ],
    )
    out += _table(
        "Gateway requests",
        ["at", "action", "allowed", "reason", "origin", "order", "amount"],
        [
            [
                q["at"],
                q["action"],
                "yes" if q["allowed"] else "**no**",
                q["reason"],
                q["origin"],
                q["order_ref"],
                _n(q["amount"]),
            ]
            for q in i.requests
        ],
    )
    return "\n".join(out)


def _n(v: int | None, signed: bool = False) -> str:
    if v is None:
        return ""
    return f"{v:+,}" if signed else f"{v:,}"


def _table(title: str, head: list[str], rows: list[list[Any]]) -> list[str]:
    lines = [f"## {title} ({len(rows):,})", ""]
    if not rows:
        return [*lines, "none", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _cell(value: object) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")
