"""Group commits (autotrade/store/batch.py) against a real PostgreSQL: concurrent calls of one statement share
round trips, every call gets exactly its own rows, a call's error is its own, and nothing runs twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from autotrade.config import Settings
from autotrade.domain.orders import IntentStatus
from autotrade.runtime import build_runtime
from autotrade.store.batch import APPLICATION_NAME, Batched, Unbatched
from autotrade.store.db import Database
from autotrade.store.models import AccessLog, Account, OrderIntentRow, User
from autotrade.trading.orders import _CLAIM

pytestmark = pytest.mark.postgres

_LOG = sa.insert(AccessLog).returning(AccessLog.id)  # its serial key alone: it has a set form
_LOG_KEYS = ("at", "action", "allowed", "reason", "order_ref")
# access_log.reason is VARCHAR(255): a longer one fails its call alone
_NAMED = sa.select(AccessLog.id).where(AccessLog.order_ref == sa.bindparam("p_ref"))


def _intents(db: Database, n: int) -> list[int]:
    with db.unit_of_work() as s:
        s.add(User(user_id="u"))
        s.flush()
        s.add(Account(account_no="0000000001", user_id="u"))
    rows = [
        {"key": f"k{i}", "trading_day": datetime(2026, 11, 27).date(), "user_id": "u",
         "account_no": "0000000001", "code": "005930", "side": "BUY", "purpose": "BUY", "quantity": 1,
         "price": 1000, "trade_type": "MARKET"}
        for i in range(n)
    ]  # fmt: skip
    if not rows:
        return []
    with db.transaction() as conn:
        return list(conn.scalars(sa.insert(OrderIntentRow).returning(OrderIntentRow.id), rows))


def _entry(i: int, reason: str | None = None) -> dict[str, object]:
    return {"at": datetime.now(UTC), "action": "order:buy", "allowed": True, "reason": reason,
            "order_ref": f"ref-{i}"}  # fmt: skip


@pytest.mark.parametrize("target", [None, ("p_id",)], ids=["call by call", "set form"])
async def test_concurrent_calls_share_round_trips_and_each_gets_its_own_rows(
    db: Database, target: tuple[str, ...] | None
) -> None:
    ids = _intents(db, 60)
    claim = db.batched(_CLAIM, target=target)
    assert isinstance(claim, Batched)
    now = datetime.now(UTC)
    # Every intent claimed twice at once: exactly one of each pair gets the row, the other nothing.
    calls = [claim.rows({"p_id": i, "p_now": now}) for i in ids for _ in range(2)]
    results = await asyncio.gather(*calls)
    for pair in zip(results[::2], results[1::2], strict=True):
        assert sorted(len(r) for r in pair) == [0, 1]
    got = [r[0] for r in results if r]
    assert len(got) == 60 and {g[5] for g in got} == {f"k{i}" for i in range(60)}
    assert all(g[6] == 1 for g in got)  # attempts: each claimed once
    assert claim.batches < len(calls) / 10, claim.batches  # 120 calls in a few round trips
    assert (claim.set_batches > 0) == (target is not None)
    with db.unit_of_work() as s:
        statuses = s.scalars(sa.select(OrderIntentRow.status)).all()
    assert set(statuses) == {IntentStatus.SUBMITTING}


async def test_a_failing_call_fails_alone_and_nothing_runs_twice(db: Database) -> None:
    log = db.batched(_LOG, _LOG_KEYS)
    calls = [log.rows(_entry(i, "x" * 300 if i == 7 else None)) for i in range(40)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [7]
    error = results[7]
    assert isinstance(error, sa.exc.DatabaseError) and "xxxx" not in str(error)  # no parameters in it
    with db.engine.connect() as conn:
        refs = conn.scalars(sa.select(AccessLog.order_ref)).all()
    assert sorted(refs) == sorted(f"ref-{i}" for i in range(40) if i != 7)  # each once
    named = db.batched(_NAMED)
    assert [len(await named.rows({"p_ref": f"ref-{i}"})) for i in (6, 7, 8)] == [1, 0, 1]


async def test_a_lost_connection_fails_the_calls_and_the_next_ones_work(db: Database) -> None:
    log = db.batched(_LOG, _LOG_KEYS)
    await log.rows(_entry(0))  # the pool is open
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        killed = conn.scalar(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                f"WHERE datname = current_database() AND application_name = '{APPLICATION_NAME}'"
            )
        )
    assert killed
    first = await asyncio.gather(*(log.rows(_entry(i)) for i in range(1, 4)), return_exceptions=True)
    for r in first:  # written once, or failed as the tasks' retry rules know a database that went away
        assert isinstance(r, (list, sa.exc.OperationalError)), r
    assert len(await log.rows(_entry(9))) == 1  # the pool made new connections
    with db.engine.connect() as conn:
        refs = conn.scalars(sa.select(AccessLog.order_ref)).all()
    assert sorted(refs) == sorted(
        {"ref-0", "ref-9"}
        | {f"ref-{i}" for i, r in zip(range(1, 4), first, strict=True) if isinstance(r, list)}
    )


async def test_the_setting_turns_batching_off(
    pg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # build_runtime's process-wide metrics (a folder, a flush thread on this database) are not this test's
    monkeypatch.setattr("autotrade.ops.worker_metrics.enable", lambda *a, **k: None)
    on = build_runtime(Settings(database_url=pg, data_dir=tmp_path)).db
    off = build_runtime(Settings(database_url=pg, data_dir=tmp_path, database_batching=False)).db
    try:
        assert on.batching and isinstance(on.batched(_LOG, _LOG_KEYS), Batched)
        assert not off.batching and isinstance(off.batched(_LOG, _LOG_KEYS), Unbatched)
        assert off.transaction_async() is None
        # Both paths write the same rows.
        for db, base in ((on, 0), (off, 100)):
            rows = await asyncio.gather(
                *(db.batched(_LOG, _LOG_KEYS).rows(_entry(base + i)) for i in range(5))
            )
            assert [len(r) for r in rows] == [1] * 5
        with on.engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(AccessLog)) == 10
    finally:
        await on.aclose()
        on.dispose()
        off.dispose()


def test_a_pool_left_in_an_ended_event_loop_lets_its_connections_go(pg: str) -> None:
    """A process that runs several event loops one after another (asyncio.run per step) keeps one pool's
    connections at a time, not one pool per loop."""
    db = Database(pg)
    count = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = :n AND datname = current_database()"
    )
    try:
        with db.engine.connect() as conn:
            before = conn.scalar(count, {"n": APPLICATION_NAME})  # other tests' pools, if any
        for i in range(4):
            asyncio.run(db.batched(_LOG, _LOG_KEYS).rows(_entry(i)))  # each run leaves its pool open
        with db.engine.connect() as conn:
            after = conn.scalar(count, {"n": APPLICATION_NAME})
        assert after - before <= 1
    finally:
        db.dispose()


async def test_batches_cancelled_before_they_ran_leave_the_statement_working(db: Database) -> None:
    """A dying step cancels every task it started, the batches' own among them, some before their first
    line ran. The statement's next calls still go out (no batch slot is lost), and a caller whose batch was
    stopped under it learns that the outcome is unknown, not that it was cancelled itself."""
    log = db.batched(_LOG, _LOG_KEYS)
    await log.rows(_entry(0))  # the pool is open
    for round_ in range(3):
        before = asyncio.all_tasks()
        callers = [asyncio.ensure_future(log.rows(_entry(100 * (round_ + 1) + i))) for i in range(6)]
        await asyncio.sleep(0)  # the calls are gathered ...
        await asyncio.sleep(0)  # ... and the batch tasks made, not one of them run yet
        flushes = [t for t in asyncio.all_tasks() - before if t not in callers]
        assert flushes, "no batch task was started"
        for t in flushes:
            t.cancel()
        outcomes = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), 30)
        assert outcomes and all(isinstance(o, sa.exc.OperationalError) for o in outcomes), outcomes
    # IN_FLIGHT slots would all be gone by now: the next calls must still be answered.
    rows = await asyncio.wait_for(asyncio.gather(*(log.rows(_entry(900 + i)) for i in range(5))), 30)
    assert [len(r) for r in rows] == [1] * 5


# An UPDATE whose every call changes the row again: one after the other, the calls see 1, 2, 3, ...
_BUMP = (
    sa.update(OrderIntentRow)
    .where(OrderIntentRow.id == sa.bindparam("p_id"))
    .values(attempts=OrderIntentRow.attempts + 1)
    .returning(OrderIntentRow.attempts)
)


async def test_calls_of_one_row_never_share_a_set_form_batch(db: Database) -> None:
    """Each call of an UPDATE sees the row as the call before it left it, as one statement per call would:
    in one set-form statement two calls of one row would change it once, and one of them would get nothing."""
    ids = _intents(db, 20)
    bump = db.batched(_BUMP, target=("p_id",))
    assert isinstance(bump, Batched)
    results = await asyncio.gather(*(bump.rows({"p_id": i}) for i in ids for _ in range(4)))
    seen: dict[int, list[int]] = {}
    for (intent, _), rows in zip([(i, n) for i in ids for n in range(4)], results, strict=True):
        assert len(rows) == 1, rows
        seen.setdefault(intent, []).append(rows[0][0])
    assert all(sorted(v) == [1, 2, 3, 4] for v in seen.values()), seen
    assert bump.set_batches > 0 and bump.batches >= 4  # a row's four calls: four batches at least
    with db.unit_of_work() as s:
        assert set(s.scalars(sa.select(OrderIntentRow.attempts))) == {4}


async def test_a_set_form_insert_gives_each_call_the_key_of_its_own_row(db: Database) -> None:
    log = db.batched(_LOG, _LOG_KEYS)
    assert isinstance(log, Batched)
    refs = [f"ref-{i}" for i in range(300)]
    results = await asyncio.gather(*(log.rows(_entry(i)) for i in range(300)))
    assert log.set_batches > 0
    with db.engine.connect() as conn:
        by_id = dict(conn.execute(sa.select(AccessLog.id, AccessLog.order_ref)).tuples().all())
    assert [by_id[r[0][0]] for r in results] == refs


async def test_a_set_form_select_gives_each_call_its_own_rows(db: Database) -> None:
    """Calls that find no row, one, or several, in one statement: each gets exactly what it would alone."""
    log = db.batched(_LOG, _LOG_KEYS)
    for i in range(30):
        for _ in range(i % 3):  # ref-i has i % 3 rows
            await log.rows(_entry(i))
    named = db.batched(_NAMED)
    assert isinstance(named, Batched)
    results = await asyncio.gather(*(named.rows({"p_ref": f"ref-{i}"}) for i in range(30)))
    assert named.set_batches > 0
    assert [len(r) for r in results] == [i % 3 for i in range(30)]
    with db.engine.connect() as conn:
        by_id = dict(conn.execute(sa.select(AccessLog.id, AccessLog.order_ref)).tuples().all())
    assert all(by_id[row[0]] == f"ref-{i}" for i, rows in enumerate(results) for row in rows)


def test_statements_without_a_safe_set_form_keep_going_call_by_call() -> None:
    from autotrade.store.batch import set_form

    assert set_form(_BUMP, target=("p_id",)) is not None and set_form(_NAMED) is not None
    assert set_form(_BUMP) is None  # an UPDATE that does not say which row each call changes
    assert set_form(_NAMED.order_by(AccessLog.id)) is None  # an order the join would not keep
    assert set_form(sa.insert(AccessLog).returning(AccessLog.reason), _LOG_KEYS) is None  # not its key
    assert set_form(sa.select(AccessLog.id).where(AccessLog.action == "order:buy")) is None  # no parameter


class _Recording:
    """An asyncpg connection that keeps the statements sent through it (and how: one, or one per call)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.sent: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._conn, name)
        if name not in ("fetch", "fetchmany", "executemany", "execute"):
            return found

        def recorded(sql: str, *args: Any) -> Any:
            self.sent.append((name, sql))
            return found(sql, *args)

        return recorded


async def test_a_transactions_rows_go_as_one_insert_each_with_their_own_keys_and_defaults(
    db: Database,
) -> None:
    """An account's plan (Transaction.many): ten intents are one INSERT, each call gets the key of its own
    row, and the model's defaults are filled in (a constant; a timestamp, one for the statement); rows of
    an INSERT without RETURNING go in the same way."""
    _intents(db, 0)  # the user and the account
    rows = [
        {"key": f"p{i}", "trading_day": datetime(2026, 11, 27).date(), "user_id": "u",
         "account_no": "0000000001", "code": f"{i:06d}", "side": "BUY", "purpose": "BUY", "quantity": i + 1,
         "price": 1000, "trade_type": "MARKET"}
        for i in range(10)
    ]  # fmt: skip
    logged = [_entry(i) for i in range(5)]
    transaction = db.transaction_async()
    assert transaction is not None
    async with transaction as tx:
        recording = _Recording(tx._conn)
        tx._conn = recording
        found = await tx.many(
            sa.insert(OrderIntentRow).returning(OrderIntentRow.id), rows, keys=list(rows[0])
        )
        none = await tx.many(sa.insert(AccessLog), logged, keys=list(logged[0]))
    assert [(how, sql.count("unnest(")) for how, sql in recording.sent] == [("fetch", 1), ("fetch", 1)]
    assert none == [[]] * 5
    with db.engine.connect() as conn:
        stored = {r.id: r for r in conn.execute(sa.select(OrderIntentRow))}
        assert conn.scalar(sa.select(sa.func.count()).select_from(AccessLog)) == 5
    assert [stored[r[0][0]].key for r in found] == [f"p{i}" for i in range(10)]
    assert [stored[r[0][0]].quantity for r in found] == list(range(1, 11))
    assert {s.status for s in stored.values()} == {IntentStatus.NEW}
    assert len({s.created_at for s in stored.values()}) == 1 and None not in {
        s.created_at for s in stored.values()
    }


def test_a_default_each_call_must_compute_keeps_the_statement_call_by_call() -> None:
    """A Python-side default that is neither a constant nor a timestamp (a generated key) would be computed
    once for a whole batch in the set form: such a statement has none."""
    import uuid

    from autotrade.store.batch import set_form

    table = sa.Table(
        "tagged", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String),
        sa.Column("tag", sa.String, default=lambda: uuid.uuid4().hex),
        sa.Column("at", sa.DateTime(timezone=True), default=lambda: datetime.now(UTC)),
        sa.Column("n", sa.Integer, default=0),
    )  # fmt: skip
    assert set_form(sa.insert(table).returning(table.c.id), ["name", "tag"]) is not None  # tag given
    assert set_form(sa.insert(table).returning(table.c.id), ["name"]) is None
