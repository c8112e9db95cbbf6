"""Store behaviour on both backends: aware timestamps, integer KRW, enforced keys and enums."""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, StatementError

from autotrade.domain.models import Side
from autotrade.domain.orders import IntentStatus
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import FillRow, OrderIntentRow, TradingSignal
from autotrade.store.repositories import ApiKeys, Intents, Users

KST = timezone(timedelta(hours=9))


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    upgrade(db_url)
    database = Database(db_url)
    with database.unit_of_work() as s:
        users = Users(s)
        users.ensure("u1")
        users.ensure_account("u1", "11111111")
        users.ensure("u2")
        users.ensure_account("u2", "22222222")
    yield database
    database.dispose()


def intent(key: str, **kw: object) -> OrderIntentRow:
    fields: dict[str, object] = dict(
        key=key, trading_day=date(2026, 11, 25), user_id="u1", account_no="11111111", code="005930",
        side=Side.BUY, purpose="BUY", quantity=10, price=70_000, trade_type="81",
    )  # fmt: skip
    fields.update(kw)
    return OrderIntentRow(**fields)


def test_intent_key_is_unique_and_create_once_is_idempotent(db: Database) -> None:
    with db.unit_of_work() as s:
        _row, created = Intents(s).create_once(intent("k1"))
        assert created
    with db.unit_of_work() as s:
        again, created = Intents(s).create_once(intent("k1", quantity=99))
        assert not created and again.quantity == 10
    with pytest.raises(IntegrityError), db.unit_of_work() as s:
        s.add(intent("k1"))


def test_timestamps_round_trip_as_aware_utc(db: Database) -> None:
    at = datetime(2026, 11, 25, 15, 45, 30, tzinfo=KST)
    with db.unit_of_work() as s:
        s.add(intent("k2"))
        s.flush()
        s.add(
            FillRow(
                user_id="u1", account_no="11111111", order_no="0000001", fill_no="1", code="005930",
                side=Side.BUY, quantity=10, price=70_000, executed_at=at,
            )
        )  # fmt: skip
    with db.unit_of_work() as s:
        got = s.scalar(sa.select(FillRow.executed_at))
        assert got == at and got.tzinfo is not None and got.utcoffset() == timedelta(0)
        created = s.scalar(sa.select(OrderIntentRow.created_at))
        assert created is not None and created.tzinfo is not None


def test_naive_timestamps_are_refused(db: Database) -> None:
    with pytest.raises(StatementError), db.unit_of_work() as s:
        s.add(
            FillRow(
                user_id="u1", account_no="11111111", order_no="1", fill_no="1", code="005930",
                side=Side.BUY, quantity=1, price=1, executed_at=datetime(2026, 11, 25, 9, 0),
            )
        )  # fmt: skip


def test_money_holds_large_integers_exactly(db: Database) -> None:
    """12,345,678,901,234 KRW does not fit a 32-bit int nor survive a float exactly at the won."""
    with db.unit_of_work() as s:
        s.add(intent("k3", price=12_345_678_901_234))
    with db.unit_of_work() as s:
        price = s.scalar(sa.select(OrderIntentRow.price).where(OrderIntentRow.key == "k3"))
        assert price == 12_345_678_901_234


def test_foreign_keys_and_enum_checks_are_enforced(db: Database) -> None:
    with pytest.raises(IntegrityError), db.unit_of_work() as s:
        s.add(intent("k4", account_no="99999999"))
    with pytest.raises((IntegrityError, StatementError, LookupError)), db.unit_of_work() as s:
        s.execute(
            sa.text(
                "INSERT INTO order_intents (key, trading_day, user_id, account_no, code, side, purpose, "
                "quantity, trade_type, status, filled_quantity, filled_amount, attempts, created_at, "
                "updated_at) VALUES ('k5', '2026-11-25', 'u1', '11111111', '005930', 'BUY', 'BUY', 1, '3', "
                "'BOGUS', 0, 0, 0, :t, :t)"
            ),
            {"t": datetime.now(UTC)},
        )


def test_signal_unique_per_day_user_account_code(db: Database) -> None:
    def sig() -> TradingSignal:
        return TradingSignal(
            user_id="u1", account_no="11111111", trading_day=date(2026, 11, 25), code="005930",
            name="삼성전자", score=8.5, current_price=70_000,
        )  # fmt: skip

    with db.unit_of_work() as s:
        s.add(sig())
    with pytest.raises(IntegrityError), db.unit_of_work() as s:
        s.add(sig())


def test_account_of_another_user_is_refused(db: Database) -> None:
    with pytest.raises(PermissionError), db.unit_of_work() as s:
        Users(s).ensure_account("u2", "11111111")


def test_open_intents_and_unit_of_work_rollback(db: Database) -> None:
    with pytest.raises(RuntimeError), db.unit_of_work() as s:
        s.add(intent("k6"))
        s.flush()
        raise RuntimeError("boom")
    with db.unit_of_work() as s:
        assert Intents(s).by_key("k6") is None
        s.add(intent("k7", status=IntentStatus.UNKNOWN))
    with db.unit_of_work() as s:
        assert [r.key for r in Intents(s).needing_reconciliation()] == ["k7"]
        assert [r.key for r in Intents(s).open_for("u1", "11111111")] == ["k7"]
        assert ApiKeys(s).tradable() == []


def test_a_single_statement_commits_by_itself(db: Database) -> None:
    with db.unit_of_work() as s:
        s.add(intent("k-auto"))
    with db.statement() as conn:
        conn.execute(sa.update(OrderIntentRow).where(OrderIntentRow.key == "k-auto").values(attempts=7))
        # Still inside the block, another connection already sees it: no transaction is left open.
        with db.engine.connect() as other:
            seen = other.scalar(sa.select(OrderIntentRow.attempts).where(OrderIntentRow.key == "k-auto"))
    assert seen == 7


@pytest.mark.postgres
def test_a_pooled_connection_lost_while_resting_is_replaced(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import autotrade.store.db as store_db

    db = Database(pg_url, pool_size=1, max_overflow=0)
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        pid_of = sa.text("SELECT pg_backend_pid()")
        with db.statement() as conn:
            first = conn.scalar(pid_of)
        with db.statement() as conn:  # in use a moment ago: the same connection, not tested again
            assert conn.scalar(pid_of) == first
        with admin.connect() as conn:  # the server drops it while it rests in the pool
            assert conn.scalar(sa.text("SELECT pg_terminate_backend(:p)"), {"p": first})
        monkeypatch.setattr(store_db, "IDLE_BEFORE_PING", 0.0)  # it has rested long enough to be tested
        with db.statement() as conn:
            second = conn.scalar(pid_of)
        assert second != first
    finally:
        db.dispose()
        admin.dispose()
