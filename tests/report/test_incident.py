"""The incident report of one account against a ledger whose figures are worked out by hand, on SQLite and
PostgreSQL: only that account's rows since the moment, and the money at risk (open positions at the last
fill price of their stock or at entry, buys whose outcome is open or unknown)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path

import pytest

from autotrade.domain.exits import StrategyStatus
from autotrade.domain.krx import KST
from autotrade.domain.models import Side, TradeAction
from autotrade.domain.orders import IntentStatus
from autotrade.report.incident import UnknownAccount, as_json, incident_report, markdown
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import (
    AccessLog,
    FillRow,
    OrderIntentRow,
    SecurityEvent,
    ThreeTierStrategy,
    TradeRecordRow,
    TradingSignal,
)
from autotrade.store.repositories import Users

WED, THU = date(2026, 11, 18), date(2026, 11, 19)
SINCE = datetime(2026, 11, 19, 9, 0, tzinfo=KST)
A1, A2 = "11111111", "22222222"


def at(day: date, h: int, m: int = 0) -> datetime:
    return datetime.combine(day, time(h, m), tzinfo=KST)


def _strategy(s, sid, code, price, qty, held):  # type: ignore[no-untyped-def]
    s.add(ThreeTierStrategy(
        id=sid, user_id="alice", account_no=A1, buy_intent_key=f"buy-{sid}", code=code, name=f"n{code}",
        quantity=qty, entry_price=price, entry_date=WED, stop_loss_price=price * 95 // 100,
        preserve_price=price * 104 // 100, take_profit_price=price * 108 // 100, held_quantity=held,
        preserve_target=qty // 2, status=StrategyStatus.ACTIVE if held else StrategyStatus.COMPLETED,
    ))  # fmt: skip


def _intent(s, key, acct, code, status, qty, price, filled=0, day=THU, signal=None):  # type: ignore[no-untyped-def]
    when = at(day, 15, 45)
    s.add(OrderIntentRow(
        key=key, trading_day=day, user_id="alice" if acct == A1 else "bob", account_no=acct, code=code,
        side=Side.BUY, purpose="BUY", quantity=qty, price=price, trade_type="AFTER_HOURS_CLOSE",
        status=status,
        filled_quantity=filled, filled_amount=filled * (price or 0), signal_id=signal, created_at=when,
        updated_at=when,
    ))  # fmt: skip


def _fill(s, n, acct, code, qty, price, when):  # type: ignore[no-untyped-def]
    user = "alice" if acct == A1 else "bob"
    s.add(FillRow(user_id=user, account_no=acct, order_no=f"o{n}", fill_no=f"f{n}", code=code, side=Side.SELL,
                  quantity=qty, price=price, executed_at=when))  # fmt: skip


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    upgrade(db_url)
    database = Database(db_url)
    seed(database)
    try:
        yield database
    finally:
        database.dispose()


def seed(database: Database) -> None:
    """The ledger whose figures the tests work out by hand."""
    with database.unit_of_work() as s:
        users = Users(s)
        for user, acct in (("alice", A1), ("bob", A2)):
            users.ensure(user)
            users.ensure_account(user, acct)
        s.flush()
        _strategy(s, 1, "005930", 50_000, 10, 10)  # open: the last fill of 005930 is bob's at 52,000
        _strategy(s, 2, "000660", 100_000, 3, 3)  # open: no fill of 000660 anywhere, priced at entry
        _strategy(s, 3, "035420", 40_000, 2, 0)  # closed: not at risk
        s.add(TradingSignal(id=7, user_id="alice", account_no=A1, trading_day=THU, code="005380", name="n",
                            score=8.0, current_price=30_000))  # fmt: skip
        s.flush()
        _intent(s, "old", A1, "000270", IntentStatus.FILLED, 1, 1_000, 1, day=WED)  # before: left out
        _intent(s, "lost", A1, "035720", IntentStatus.UNKNOWN, 7, 20_000)  # 7 x 20,000 = 140,000
        _intent(s, "sending", A1, "005380", IntentStatus.SUBMITTING, 4, None, signal=7)  # 4 x 30,000
        _intent(s, "working", A1, "051910", IntentStatus.PARTIALLY_FILLED, 10, 10_000, 4)  # 6 x 10,000
        _intent(s, "done", A1, "068270", IntentStatus.FILLED, 2, 5_000, 2)  # final: not at risk
        _intent(s, "bobs", A2, "035720", IntentStatus.UNKNOWN, 9, 20_000)  # another account
        _fill(s, 1, A1, "005930", 5, 49_000, at(WED, 10))  # before the moment: not listed, and older
        _fill(s, 2, A1, "005930", 5, 51_000, at(THU, 10))
        _fill(s, 3, A2, "005930", 1, 52_000, at(THU, 11))  # bob's: not listed, but the last price
        s.add(TradeRecordRow(trade_id="t1", user_id="alice", account_no=A1, code="005930", name="n005930",
                             action=TradeAction.SELL, quantity=5, price=51_000, amount=255_000,
                             executed_at=at(THU, 10), trading_day=THU, profit_loss=4_000))  # fmt: skip
        s.add(TradeRecordRow(trade_id="t0", user_id="alice", account_no=A1, code="005930", name="n005930",
                             action=TradeAction.SELL, quantity=5, price=49_000, amount=245_000,
                             executed_at=at(WED, 10), trading_day=WED, profit_loss=-6_000))  # fmt: skip
        for n, (acct, user, when, allowed) in enumerate([
            (A1, "alice", at(WED, 15), True), (A1, "alice", at(THU, 9, 1), True),
            (A1, "alice", at(THU, 9, 2), False), (None, "alice", at(THU, 9, 3), False),
            (A2, "bob", at(THU, 9, 4), False), (None, "bob", at(THU, 9, 5), True),
        ]):  # fmt: skip
            s.add(AccessLog(at=when, user_id=user, account_no=acct, action="order.buy", origin="prefect",
                            allowed=allowed, reason=None if allowed else f"refused {n}"))  # fmt: skip
        s.add(SecurityEvent(at=at(THU, 9, 3), user_id="alice", account_no=A1, rule="burst", severity="high",
                            action_taken="key DISABLED"))  # fmt: skip
        s.add(SecurityEvent(at=at(WED, 9), user_id="alice", account_no=A1, rule="off_hours", severity="low"))
        s.add(SecurityEvent(at=at(THU, 9, 4), user_id="bob", account_no=A2, rule="burst", severity="high"))


def test_the_incident_report_of_one_account_since_a_moment(db: Database, tmp_path: Path) -> None:
    report = incident_report(db, A1, SINCE, now=at(THU, 16))
    data = as_json(report)
    # Requests: alice's since 09:00 on her account (09:01, 09:02) and one without an account (09:03).
    assert [r["at"][11:16] for r in report.requests] == ["09:01", "09:02", "09:03"]
    assert [r["reason"] for r in report.refusals] == ["refused 2", "refused 3"]
    assert [(e["rule"], e["action_taken"]) for e in report.security_events] == [("burst", "key DISABLED")]
    assert sorted(o["key"] for o in report.orders) == ["done", "lost", "sending", "working"]
    assert [(f["price"], f["amount"]) for f in report.fills] == [(51_000, 255_000)]
    assert [(t["profit_loss"]) for t in report.trades] == [4_000]
    risk = data["money_at_risk"]
    # Positions: 005930 10 x 52,000 = 520,000 (cost 500,000); 000660 3 x 100,000 = 300,000 at entry.
    assert [(p["code"], p["last_price"], p["value"]) for p in risk["positions"]] == [
        ("005930", 52_000, 520_000), ("000660", 100_000, 300_000),
    ]  # fmt: skip
    assert risk["positions_value"] == 820_000 and risk["positions_cost"] == 800_000
    assert risk["unrealized"] == 20_000
    # To the stops: 10 x (52,000 - 47,500) + 3 x (100,000 - 95,000) = 45,000 + 15,000.
    assert risk["loss_to_stops"] == 60_000
    # Buys: lost 7 x 20,000 (limit) + sending 4 x 30,000 (the signal's price) + working 6 x 10,000.
    assert [(b["key"], b["unfilled"], b["price"], b["priced_from"]) for b in risk["buys"]] == [
        ("lost", 7, 20_000, "limit"), ("sending", 4, 30_000, "signal"), ("working", 6, 10_000, "limit"),
    ]  # fmt: skip
    assert risk["buys_amount"] == 320_000 and risk["total"] == 1_140_000
    text = markdown(report)
    assert "**money at risk 1,140,000원**" in text
    assert "gateway requests 3 (refused 2); security events 1; orders 4; fills 1; trades 1" in text
    json.dumps(data, ensure_ascii=False)  # serializable as it is
    with pytest.raises(UnknownAccount):
        incident_report(db, "99999999", SINCE)
