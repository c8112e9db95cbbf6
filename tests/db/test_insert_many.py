"""Database.insert_many: many rows in one statement (a COPY on PostgreSQL), each value as it was given,
and all or nothing when a row breaks a constraint."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import AccessLog, UserNotice

AWKWARD = ["", "\\N", 'say "hi", twice', "line\nbreak", "매수 주문 접수", "tab\there", "back\\slash", "NULL"]


@pytest.fixture
def db(db_url: str) -> Database:  # type: ignore[misc]
    upgrade(db_url)
    d = Database(db_url)
    yield d
    d.dispose()


def test_rows_arrive_as_given(db: Database) -> None:
    seoul = timezone(timedelta(hours=9))
    at = datetime(2026, 11, 27, 15, 40, 1, 123456, tzinfo=seoul)
    rows = [
        {"at": at + timedelta(seconds=i), "user_id": None if i % 3 == 0 else f"u{i}", "account_no": "1",
         "action": "order:buy", "allowed": i % 2 == 0, "reason": [*AWKWARD, None][i % 9],
         "amount": None if i % 4 == 0 else 10**12 + i, "order_ref": f"ref-{i}"}
        for i in range(40)
    ]  # fmt: skip
    with db.unit_of_work() as s:
        db.insert_many(s, AccessLog.__table__, rows)  # type: ignore[arg-type]
    with db.unit_of_work() as s:
        got = s.execute(
            sa.select(AccessLog.at, AccessLog.user_id, AccessLog.allowed, AccessLog.reason, AccessLog.amount)
            .order_by(AccessLog.order_ref)
        ).tuples().all()  # fmt: skip
    want = sorted(rows, key=lambda r: r["order_ref"])
    assert [(g[0], g[1], g[2], g[3], g[4]) for g in got] == [
        (r["at"].astimezone(UTC), r["user_id"], r["allowed"], r["reason"], r["amount"]) for r in want
    ]


def test_a_row_that_breaks_a_constraint_fails_them_all(db: Database) -> None:
    row = {"user_id": "u", "trading_day": date(2026, 11, 27), "kind": "BUY_ORDERS_PLACED",
           "told_at": datetime.now(UTC)}  # fmt: skip
    with db.unit_of_work() as s:
        db.insert_many(s, UserNotice.__table__, [{**row, "item": "order:1"}])  # type: ignore[arg-type]
    with pytest.raises(sa.exc.IntegrityError), db.unit_of_work() as s:
        db.insert_many(
            s, UserNotice.__table__, [{**row, "item": f"order:{i}"} for i in (2, 3, 1, 4)]  # type: ignore[arg-type]
        )
    with db.unit_of_work() as s:
        assert s.scalars(sa.select(UserNotice.item)).all() == ["order:1"]
