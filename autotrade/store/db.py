"""Engine and unit of work: one session per unit of work, committed on success, rolled back on error."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.base import Executable

from autotrade.store.batch import Batched, BatchPool, Grouped, Unbatched
from autotrade.store.batch import Statement as BatchStatement
from autotrade.store.batch import Transaction as BatchTransaction

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PgInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert

P = ParamSpec("P")
T = TypeVar("T")
U = TypeVar("U")
R = TypeVar("R")


def create_db_engine(url: str, **kw: object) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys on, WAL and a busy timeout (several writers)."""
    if url.startswith("sqlite"):
        db_path = sa.engine.make_url(url).database
        if db_path and db_path != ":memory:":
            from autotrade.secret_files import private_sqlite_file

            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            private_sqlite_file(db_path)  # 0600: the database holds sealed keys and password hashes
        engine = sa.create_engine(url, connect_args={"timeout": 30}, **kw)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            if db_path and db_path != ":memory:":
                cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    engine = sa.create_engine(url, **kw)
    _ping_when_idle(engine)
    return engine


IDLE_BEFORE_PING = 10.0  # seconds a pooled connection may rest before it is tested on checkout


def _ping_when_idle(engine: Engine) -> None:
    """Test a pooled connection on checkout when it has rested a while (a server restart or a dropped link
    shows there), not when it was in use a moment ago: a busy process checks connections out several times
    per order, and a test on each would double its round trips. A connection that fails the test is
    replaced (the pool retries the checkout); one that dies in use fails its statement, which is retried."""

    @event.listens_for(engine, "checkin")
    def _rested_from(_dbapi_conn, record):  # type: ignore[no-untyped-def]
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _test_if_rested(dbapi_conn, record, _proxy):  # type: ignore[no-untyped-def]
        since = record.info.get("checked_in")
        if since is None or time.monotonic() - since < IDLE_BEFORE_PING:
            return
        try:
            cur = dbapi_conn.cursor()
            try:
                cur.execute("SELECT 1")
            finally:
                cur.close()
        except engine.dialect.loaded_dbapi.Error as exc:
            failed = type(exc).__name__
            raise sa.exc.DisconnectionError(f"pooled connection failed its test: {failed}") from None


_COPY_NULL = "\\N"  # how a NULL is written in a COPY (a value, always quoted, is never taken for it)


def _csv_field(value: object) -> str:
    """One value of a COPY in CSV: quoted (an empty string stays one), its quotes doubled."""
    text = value.isoformat() if isinstance(value, (date, datetime)) else str(value)
    return '"' + text.replace('"', '""') + '"'


class Database:
    def __init__(self, url: str, *, batching: bool = True, **engine_kw: object) -> None:
        """``batching``: on PostgreSQL, the order path's statements go in group commits (:meth:`batched`)."""
        self.url = url
        self.engine = create_db_engine(url, **engine_kw)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._executor: ThreadPoolExecutor | None = None
        self._batch_pool: BatchPool | None = None
        self._batched: dict[tuple[int, tuple[str, ...] | None, tuple[str, ...] | None], BatchStatement] = {}
        self._grouped: dict[Callable[..., Any], Grouped[Any, Any]] = {}
        if batching and self.engine.dialect.name == "postgresql":
            self._batch_pool = BatchPool(url)

    @property
    def batching(self) -> bool:
        return self._batch_pool is not None

    def batched(
        self, statement: Executable, keys: Sequence[str] | None = None, target: Sequence[str] | None = None
    ) -> BatchStatement:
        """``statement`` for the hot paths: its concurrent calls in group commits on PostgreSQL
        (:mod:`autotrade.store.batch`), one call at a time otherwise. Build it once, call it often. ``keys``:
        an INSERT's given columns; ``target``: the parameters that name the one row an UPDATE changes (it
        then runs once for a whole batch). One per statement and database: the calls of every caller
        gather."""
        key = (
            id(statement),
            None if keys is None else tuple(keys),
            None if target is None else tuple(target),
        )
        found = self._batched.get(key)
        if found is None:
            if self._batch_pool is None:
                found = Unbatched(self, statement)
            else:
                found = Batched(self._batch_pool, statement, keys, target)
            self._batched[key] = found
        return found

    def grouped(
        self, write: Callable[[BatchTransaction, list[U]], Awaitable[list[R]]], what: str
    ) -> Grouped[U, R] | None:
        """Units of writes that each stand or fall whole, written by ``write`` (a module-level function: one
        group per function and database) for the units of concurrent callers at once, in one transaction
        (:class:`~autotrade.store.batch.Grouped`); None without the batch path (SQLite): the caller then
        writes each unit in a transaction of its own (:meth:`transaction`, in a worker thread). ``what``
        names them in errors and measurements."""
        if self._batch_pool is None:
            return None
        found = self._grouped.get(write)
        if found is None:
            found = self._grouped[write] = Grouped(self._batch_pool, write, what)
        return found

    def batch_statements(self) -> list[Batched | Grouped[Any, Any]]:
        """The statements and groups of writes that went in group commits in this process (their round
        trips or transactions, and calls)."""
        return [*(b for b in self._batched.values() if isinstance(b, Batched)), *self._grouped.values()]

    def transaction_async(self) -> AbstractAsyncContextManager[BatchTransaction] | None:
        """One asyncpg connection in one transaction, from the event loop (PostgreSQL with batching); None
        otherwise: the caller then uses :meth:`transaction` in a worker thread."""
        return None if self._batch_pool is None else self._batch_pool.transaction()

    async def aclose(self) -> None:
        """Close this event loop's batch connections (the end of a run)."""
        if self._batch_pool is not None:
            await self._batch_pool.aclose()

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A plain connection in one transaction (committed on success): for the hot paths that run a few
        prepared statements per order and need none of the ORM's bookkeeping."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def statement(self) -> Iterator[Connection]:
        """A plain connection whose statements commit by themselves (no BEGIN and COMMIT round trips): for
        work where each statement is atomic on its own, as the order protocol's conditional writes and the
        gateway's checks and log entries are."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn

    def upsert(self, table: Any) -> PgInsert | SqliteInsert:
        """An INSERT into ``table`` in this database's dialect, so ``.on_conflict_do_update(...)`` (and
        ``.excluded``) work on PostgreSQL and SQLite alike."""
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return pg_insert(table) if self.engine.dialect.name == "postgresql" else sqlite_insert(table)

    def insert_many(self, s: Session, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """``rows`` (each with the same columns) into ``table`` in ``s``'s transaction: on PostgreSQL one
        COPY (an evening's notices are 100,000 rows: as an INSERT of many rows 2.9 s of this process's CPU
        and 5 s in all, as a COPY 0.6-0.8 s and 1.2-1.7 s), elsewhere one INSERT of many rows. A row that
        breaks a constraint fails them all with :class:`sqlalchemy.exc.IntegrityError`, either way."""
        if not rows:
            return
        if self.engine.dialect.name != "postgresql":
            s.execute(sa.insert(table), list(rows))
            return
        import io

        import psycopg2

        columns = list(rows[0])
        # the columns' own conversions (aware datetimes to UTC, enums to their values)
        processors = [table.c[c].type.bind_processor(self.engine.dialect) for c in columns]
        lines = []
        for row in rows:
            fields = []
            for c, p in zip(columns, processors, strict=True):
                v = row[c]
                if v is not None and p is not None:
                    v = p(v)
                fields.append(_COPY_NULL if v is None else _csv_field(v))
            lines.append(",".join(fields))
        text = io.StringIO("\n".join(lines) + "\n")
        quote = self.engine.dialect.identifier_preparer
        names = ", ".join(quote.quote(c) for c in columns)
        sql = f"COPY {quote.format_table(table)} ({names}) FROM STDIN WITH (FORMAT csv, NULL '{_COPY_NULL}')"
        raw: Any = s.connection().connection.dbapi_connection
        try:
            with raw.cursor() as cur:
                cur.copy_expert(sql, text)
        except psycopg2.IntegrityError as exc:
            raise sa.exc.IntegrityError(sql, None, exc) from None

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a short blocking unit of database work off the event loop, so that one account's wait on
        the database (a commit's flush to disk) lets the others go on. One worker thread per pooled
        connection; a single one for SQLite, which writes one transaction at a time anyway."""
        if self._executor is None:
            workers = 1 if self.url.startswith("sqlite") else max(1, self.engine.pool.size())  # type: ignore[attr-defined]
            self._executor = ThreadPoolExecutor(workers, thread_name_prefix="autotrade-db")
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def dispose(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.engine.dispose()
