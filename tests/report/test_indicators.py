"""The operating indicators of one day against a ledger worked out by hand, on SQLite and PostgreSQL, in
the operator's report, and a missed one told to the operator through the runtime's notifier."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from autotrade.config import Settings
from autotrade.domain.krx import KST
from autotrade.domain.models import Side
from autotrade.domain.orders import IntentStatus
from autotrade.report import build_daily_reports
from autotrade.report.indicators import missed, operating_indicators
from autotrade.runtime import Runtime, build_notifier, set_runtime
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import AccessLog, BrokerTokenCache, OrderIntentRow, SecurityEvent
from autotrade.store.repositories import Users

THU = date(2026, 11, 19)
A1 = "11111111"


def at(h: int, m: int, s: int = 0) -> datetime:
    return datetime.combine(THU, time(h, m, s), tzinfo=KST)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    upgrade(db_url)
    database = Database(db_url)
    with database.unit_of_work() as s:
        Users(s).ensure("alice")
        Users(s).ensure_account("alice", A1)
        s.flush()
        # A request every 5 minutes of the session, 09:00 to 15:25 (78 slots), but none in 10:00-10:05.
        for n in range(78):
            if n != 12:
                s.add(AccessLog(at=at(9, 0) + n * timedelta(minutes=5), user_id="alice", account_no=A1,
                                action="account:read", allowed=True))  # fmt: skip
        for sec in (5, 10):  # two refusals after the close; the second trips the kill switch
            s.add(AccessLog(at=at(16, 0, sec), user_id="alice", account_no=A1, action="order:buy",
                            allowed=False, reason="off hours"))  # fmt: skip
        s.add(SecurityEvent(at=at(16, 0, 30), user_id="alice", account_no=A1, rule="failed_checks",
                            severity="high", action_taken="key DISABLED, broker token revoked"))  # fmt: skip
        s.add(SecurityEvent(at=at(16, 5), user_id="alice", account_no=A1, rule="off_hours", severity="low",
                            action_taken="recorded"))  # fmt: skip
        for key, qty, filled, no, status in (
            ("a", 10, 10, "1", IntentStatus.FILLED), ("b", 10, 8, "2", IntentStatus.EXPIRED),
            ("c", 5, 0, None, IntentStatus.REJECTED), ("d", 3, 0, None, IntentStatus.NEW),
        ):  # fmt: skip
            s.add(OrderIntentRow(key=key, trading_day=THU, user_id="alice", account_no=A1, code="005930",
                                 side=Side.BUY, purpose="BUY", quantity=qty, price=1_000, trade_type="LIMIT",
                                 status=status, order_no=no, filled_quantity=filled))  # fmt: skip
        s.add(OrderIntentRow(key="other day", trading_day=THU - timedelta(days=1), user_id="alice",
                             account_no=A1, code="005930", side=Side.BUY, purpose="BUY", quantity=100,
                             price=1_000, trade_type="LIMIT", status=IntentStatus.REJECTED))  # fmt: skip
        s.add(BrokerTokenCache(key_id="alice:11111111", token_sealed="x", expires_at=at(23, 0),
                               updated_at=at(8, 59)))  # fmt: skip
    try:
        yield database
    finally:
        database.dispose()


def test_the_indicators_of_a_day(db: Database) -> None:
    got = {i.name: i for i in operating_indicators(db, THU)}
    # 77 of 78 slots = 98.72%: missed (>= 99%).
    assert got["uptime"].value == 98.72 and got["uptime"].met is False
    # Orders that reached the broker: a (10 of 10) and b (8 of 10): 18 / 20 = 90%; c and d never did.
    assert got["fill rate"].value == 90.0 and got["fill rate"].met is False
    # 2 refusals + 1 rejected order over 77 + 2 = 79 requests: 3 / 79 = 3.80%.
    assert got["error rate"].value == 3.8 and got["error rate"].met is False
    # The kill at 16:00:30, the request that tripped it at 16:00:10: 20 s; the 16:05 event disabled nothing.
    assert got["kill-switch reaction time"].value == 20.0 and got["kill-switch reaction time"].met is True
    # 77 allowed requests, one broker token issued that day (one Decrypt): 76 saved.
    assert got["KMS calls saved"].value == 76.0 and got["KMS calls saved"].met is None
    response = got["average broker response time"]
    assert response.value is None and response.met is None
    assert [i.name for i in missed(list(got.values()))] == ["uptime", "fill rate", "error rate"]


def test_a_quiet_day_has_nothing_to_miss(db: Database) -> None:
    assert missed(operating_indicators(db, THU + timedelta(days=1))) == []


def test_the_operators_report_shows_them_and_a_miss_alerts(db: Database, tmp_path: Path) -> None:
    reports = build_daily_reports(db, THU, tmp_path, {})
    assert "| uptime | 98.72% (target ≥ 99%) | **NO** | 77 of 78 session slots" in reports.operator.markdown
    assert "| kill-switch reaction time | 20.00 s (target ≤ 60 s) | yes |" in reports.operator.markdown
    assert "Operating indicators" not in reports.users[0].markdown

    from autotrade.notify import ConsoleNotifier
    from flows.daily_report import check_operating_indicators

    out = io.StringIO()
    cfg = Settings(database_url=db.url, data_dir=tmp_path)
    notifier = build_notifier(cfg, db, [ConsoleNotifier(out)])
    set_runtime(Runtime(cfg, db, lambda: datetime(2026, 11, 19, 8, 0, tzinfo=UTC), None, notifier=notifier))  # type: ignore[arg-type]
    try:
        result = check_operating_indicators.fn(THU)
        notifier.flush()  # type: ignore[attr-defined]
    finally:
        set_runtime(None)
    assert result["indicators_missed"] == ["uptime", "fill rate", "error rate"]
    text = out.getvalue()
    assert "운영 지표 미달: uptime, fill rate, error rate" in text and "98.72%" in text
