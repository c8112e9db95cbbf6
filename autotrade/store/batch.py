"""Group commit for the order path's statements on PostgreSQL.

The evening sends thousands of orders at once, each with a handful of one-row statements (the intent's
claim and settle, the gateway's admission read, its access-log entry, the in-flight mark). Sent one by
one through a worker thread and a pooled connection, each statement cost about 350 us of CPU in this
process. Here the calls of one statement made while the previous batch is out go to PostgreSQL together:
one pipelined round trip (asyncpg's ``fetchmany``: the statement prepared once, every call's arguments
bound and executed in order) in one transaction, about 25 us of CPU a call. Nothing is deferred: a call
returns only once its batch is committed, so every write the exactly-once protocol makes before a broker
call is durable before the call, as it was.

A batch of several calls goes, where the statement allows it, as one statement for the whole batch (its
*set form*, :func:`set_form`): the calls' arguments as arrays unnested into rows numbered by call, a SELECT
run for each of them as a LATERAL subquery, an UPDATE joined to them (``UPDATE ... FROM``), an INSERT
taking them as its rows. PostgreSQL then starts, plans and checks one statement a batch instead of one a
call, which was most of its CPU on this path (measured: an UPDATE by key 50-76 us a call one by one against
10-22 us in its set form; the gateway's admission read 60-150 against 20-30). Two calls of one UPDATE that
name the same row (its ``target`` parameters) never share a batch: the later one waits for the next, so
each still sees the row as the earlier one left it.

Each call's rows come back to that call alone (the statement is wrapped so that every row it returns
carries the index of its call), so two calls that race for one row in a batch see exactly what they would
have seen one after the other. A batch PostgreSQL refused (it rolled back) is run again call by call, so
one call's error (a constraint, a deadlock with another batch) is that call's alone and a failed call changed
nothing. A batch whose connection was lost fails every call with ``OperationalError`` and is never run
again here: its commit may have happened, and the callers' own rules decide (the order protocol reconciles
an intent whose claim or settle is unknown).

Writes that must stand or fall together (an account's plan: its signals and its intents) gather the same
way, as units (:class:`Grouped`): the units gathered meanwhile are written in one transaction, each of its
statements once for all of them, and a group PostgreSQL refused is written again unit by unit.

Statements come from SQLAlchemy constructs (the same ones the other databases run), compiled once for
asyncpg with their types' bind processing and Python-side defaults (``onupdate``) applied per call. Rows are
returned as the driver gives them (enums as their string values): callers convert what they read. On
SQLite (the demo, the tests' default) :class:`Unbatched` runs each call as before, in a worker thread on its
own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler

if TYPE_CHECKING:
    from autotrade.store.db import Database

log = logging.getLogger(__name__)

Params = Mapping[str, Any]
Row = Sequence[Any]
_Batch = list[tuple[list[Any], "asyncio.Future[list[Row]]"]]
Item = TypeVar("Item")  # a gathered call: a statement's arguments, or a unit of writes
Unit = TypeVar("Unit")
Result = TypeVar("Result")
MAX_BATCH = 500  # calls in one round trip
IN_FLIGHT = 2  # batches of one statement out at once (the others' calls gather meanwhile)
POOL_SIZE = 8  # connections of a process's batches


class Statement(Protocol):
    async def rows(self, params: Params) -> list[Row]:
        """Run the statement for ``params``; the rows it returned (RETURNING, or a SELECT's)."""
        ...

    async def run(self, params: Params) -> None:
        """Run the statement for ``params`` (its rows, if any, are not wanted)."""
        ...


class Unbatched:
    """One call, one statement on a connection of its own that commits by itself (SQLite, or any database
    without the batch path)."""

    def __init__(self, db: Database, statement: Executable) -> None:
        self._db = db
        self._statement = statement

    def _execute(self, params: Params, want_rows: bool) -> list[Row]:
        with self._db.statement() as conn:
            result = conn.execute(self._statement, dict(params))
            return list(result.all()) if want_rows else []

    async def rows(self, params: Params) -> list[Row]:
        return await self._db.run(self._execute, params, True)

    async def run(self, params: Params) -> None:
        await self._db.run(self._execute, params, False)


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str  # wrapped, when it returns rows: every row carries the index of its call
    returns: bool  # rows (RETURNING, or a SELECT)
    names: tuple[str, ...]  # the statement's parameters, in position order
    fixed: dict[str, Any]  # literal values bound by the statement itself
    processors: Mapping[str, Callable[[Any], Any]]
    defaults: dict[str, Callable[[], Any]]  # Python-side defaults (an UPDATE's onupdate) by parameter


def _default(column: sa.Column[Any], update: bool) -> Callable[[], Any]:
    spec: Any = column.onupdate if update else column.default
    if spec is None or not (spec.is_callable or spec.is_scalar):
        raise ValueError(f"{column} has a default the batch path cannot compute")
    if spec.is_scalar:
        value = spec.arg
        return lambda: value
    fn = spec.arg
    return lambda: fn(None)  # SQLAlchemy wraps a plain callable to take the execution context


def _defaults(compiled: SQLCompiler) -> dict[str, Callable[[], Any]]:
    """The Python-side defaults a compiled statement computes per call: an INSERT's and an UPDATE's."""
    defaults = {c.key: _default(c, update=False) for c in compiled.insert_prefetch}
    defaults.update({c.key: _default(c, update=True) for c in compiled.update_prefetch})
    return defaults


def _rows_by_call(
    records: Sequence[Any], calls: int, *, first: int = 0, last: bool = False
) -> list[list[Row]]:
    """Each call's rows, from rows that carry their call's number (counted from ``first``) as their first
    column, or their ``last``; the number left out."""
    per_call: list[list[Row]] = [[] for _ in range(calls)]
    for record in records:
        row = tuple(record)
        if last:
            per_call[row[-1] - first].append(row[:-1])
        else:
            per_call[row[0] - first].append(row[1:])
    return per_call


def compile_for_batches(statement: Executable, keys: Sequence[str] | None = None) -> _Compiled:
    """``statement`` as asyncpg runs it, with the call index appended to every row it returns. ``keys``
    are an INSERT's given columns (the others take their defaults or NULL)."""
    from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg

    dialect = pg_asyncpg.dialect()  # type: ignore[no-untyped-call]
    columns = list(keys) if keys is not None else None
    compiled = statement.compile(dialect=dialect, column_keys=columns)  # type: ignore[attr-defined]
    if not isinstance(compiled, SQLCompiler):
        raise TypeError(f"not a SQL statement: {statement!r}")
    names = tuple(compiled.positiontup or ())
    defaults = _defaults(compiled)
    body = compiled.string
    returns = bool(getattr(compiled, "returning", None)) or isinstance(statement, sa.Select)
    if returns:
        body = f"WITH q AS ({body}) SELECT ${len(names) + 1}::int4 AS batch_call, q.* FROM q"  # noqa: S608
    # the types' bind processing (enums to their values, datetimes to UTC); no tuple types here
    processors = {k: p for k, p in compiled._bind_processors.items() if callable(p)}
    return _Compiled(body, returns, names, dict(compiled.params), processors, defaults)


@dataclass(frozen=True, slots=True)
class _SetForm:
    """A statement run once for a whole batch of calls (see the module's text)."""

    sql: str
    kind: str  # "select" (the call's number first in each row), "update" (last), "insert" (ids in order)
    # each parameter of ``sql`` in order: the index of a call argument (an array of every call's), or a
    # value (a literal of the statement, already processed), or a default computed once for the batch
    sources: tuple[tuple[str, Any], ...]
    target: tuple[int, ...]  # the call arguments naming an UPDATE's row: distinct within a batch
    returns: bool = True  # whether it returns rows: an INSERT without RETURNING returns none

    def arguments(self, calls: Sequence[Sequence[Any]]) -> list[Any]:
        out: list[Any] = []
        for how, what in self.sources:
            if how == "array":
                out.append([call[what] for call in calls])
            elif how == "default":
                out.append(what())
            else:
                out.append(what)
        return out

    def per_call(self, records: Sequence[Any], calls: int) -> list[list[Row]]:
        """Each call's rows, from the rows the set form returned (calls numbered from 1, as ORDINALITY
        counts)."""
        if self.kind != "insert":
            return _rows_by_call(records, calls, first=1, last=self.kind == "update")
        if not self.returns:  # an INSERT without RETURNING (its call-by-call form returns the key unasked)
            return [[] for _ in range(calls)]
        # One row a call, numbered in the order the rows went in (ORDER BY the call's number): a serial key
        # grows in that order, as SQLAlchemy's own sorted INSERT ... RETURNING relies on.
        if len(records) != calls:
            raise RuntimeError(f"an INSERT of {calls} rows returned {len(records)}")
        return [[tuple(record)] for record in sorted(records, key=lambda r: r[0])]


_BATCH_ROWS = "batch_v"  # the name of the unnested calls in a set form


def set_form(
    statement: Executable, keys: Sequence[str] | None = None, target: Sequence[str] | None = None
) -> _SetForm | None:
    """``statement``'s set form for asyncpg, or None where it has none: a SELECT; an UPDATE whose ``target``
    parameters name the row it changes (without them two calls of a batch could change one row, where one
    after the other the second would have seen the first's change); an INSERT of ``keys`` that returns its
    serial key or nothing. Not a SELECT with an ORDER BY: its rows' order would not survive the join, nor a
    statement with a Python-side default other than a constant or a timestamp. The statement's unbound
    parameters (an INSERT's ``keys``) become columns of the unnested rows, one value per call; its literals
    and its Python-side defaults stay single values, the defaults computed once a batch."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg
    from sqlalchemy.sql import visitors
    from sqlalchemy.sql.elements import BindParameter

    dialect = pg_asyncpg.dialect()  # type: ignore[no-untyped-call]
    per_call_compiled = compiled(statement, keys)
    plain = statement.compile(dialect=dialect, column_keys=list(keys) if keys is not None else None)  # type: ignore[attr-defined]
    if keys is not None:
        given = list(keys)
    else:
        given = [n for n in per_call_compiled.names if plain.binds[n].required]
    types = {n: plain.binds[n].type for n in given}
    if not given or any(isinstance(t, sa.types.NullType) for t in types.values()):
        return None  # nothing differs between the calls, or an array without a type
    arrays = [sa.bindparam(f"{n}__calls", type_=postgresql.ARRAY(_element(types[n]))) for n in given]
    rows = (
        sa.func.unnest(*arrays)
        .table_valued(*[sa.column(n, types[n]) for n in given], with_ordinality="batch_call")
        .render_derived(name=_BATCH_ROWS)
    )
    if not _once_a_batch(plain):
        return None  # a default each call must compute for itself
    new: Any
    if isinstance(statement, sa.Insert):
        returning = list(getattr(statement, "_returning", ()))
        table = statement.table
        pk = list(getattr(table, "primary_key", []))
        if keys is None or len(returning) > 1 or len(pk) != 1:
            return None
        serial = pk[0].autoincrement in (True, "auto") and isinstance(pk[0].type, sa.Integer)
        if returning and not (returning[0].compare(pk[0]) and serial):
            return None
        source = sa.select(*[rows.c[k] for k in keys]).order_by(rows.c.batch_call)
        new, kind = sa.insert(table).from_select(list(keys), source), "insert"
        if returning:
            new = new.returning(pk[0])
    elif isinstance(statement, sa.Select) and not statement._order_by_clauses:

        def outer(el: Any) -> Any:
            # a reference by name: nested subqueries must not take the rows into their own FROM
            if isinstance(el, BindParameter) and el.key in types:
                return sa.literal_column(f"{_BATCH_ROWS}.{el.key}", types[el.key])
            return None

        swapped: Any = visitors.replacement_traverse(statement, {}, outer)  # type: ignore[call-overload]
        inner = swapped.lateral("q")
        if len(inner.c) != len(statement.selected_columns):
            return None  # a column the subquery would not name apart
        new, kind = sa.select(rows.c.batch_call, *inner.c).select_from(rows).join(inner, sa.true()), "select"
    elif isinstance(statement, sa.Update) and target:

        def joined(el: Any) -> Any:
            if isinstance(el, BindParameter) and el.key in types:
                return rows.c[el.key]
            return None

        changed: Any = visitors.replacement_traverse(statement, {}, joined)  # type: ignore[call-overload]
        new, kind = changed.returning(rows.c.batch_call), "update"
    else:
        return None
    whole = new.compile(dialect=dialect)
    if not isinstance(whole, SQLCompiler) or whole.string.count("unnest(") != 1:
        return None  # the calls' rows must be one FROM item (a nested subquery would take them again)
    index = {n: i for i, n in enumerate(per_call_compiled.names)}
    defaults = _defaults(whole)
    processors = whole._bind_processors
    sources: list[tuple[str, Any]] = []
    for name in whole.positiontup or ():
        if name.endswith("__calls"):
            sources.append(("array", index[name.removesuffix("__calls")]))
        elif name in defaults:
            sources.append(("default", _processed(defaults[name], processors.get(name))))
        else:
            value = whole.params[name]
            processor = processors.get(name)
            sources.append(
                ("value", processor(value) if callable(processor) and value is not None else value)
            )
    chosen = tuple(index[n] for n in target or ())
    returns = kind != "insert" or bool(getattr(statement, "_returning", ()))
    return _SetForm(whole.string, kind, tuple(sources), chosen, returns=returns)


def _once_a_batch(compiled: SQLCompiler) -> bool:
    """Whether the statement's Python-side defaults may be computed once for a whole batch: constants, and
    timestamps (a batch's rows are written at one moment, as PostgreSQL's ``now()`` is one per transaction).
    Any other function (a generated key, say) must run per call."""
    specs = [(c, c.default) for c in compiled.insert_prefetch] + [
        (c, c.onupdate) for c in compiled.update_prefetch
    ]
    for column, spec in specs:
        if not (getattr(spec, "is_scalar", False) or isinstance(_underlying(column.type), sa.DateTime)):
            return False
    return True


_SET_FORMS: dict[tuple[int, tuple[str, ...] | None, tuple[str, ...]], tuple[Executable, _SetForm | None]] = {}


def set_form_or_none(
    statement: Executable, keys: Sequence[str] | None = None, target: Sequence[str] | None = None
) -> _SetForm | None:
    """:func:`set_form`, built once per statement, set of columns and target; None (the statement goes call
    by call, as correct, only dearer) where it has none or building it failed: a cheaper form is never worth
    a statement that cannot run."""
    key = (id(statement), None if keys is None else tuple(keys), tuple(target or ()))
    found = _SET_FORMS.get(key)
    if found is None or found[0] is not statement:
        try:
            made = set_form(statement, keys, target)
        except Exception:
            log.warning("no set form for %r: its batches go call by call", statement, exc_info=True)
            made = None
        found = _SET_FORMS[key] = (statement, made)
    return found[1]


def _element(type_: Any) -> Any:
    """An array's element type for a parameter of ``type_``: a string without its length, since an explicit
    cast to VARCHAR(n) cuts a longer value short where the column (and the call-by-call form) refuses it."""
    return sa.String() if isinstance(_underlying(type_), sa.String) else type_


def _underlying(type_: Any) -> Any:
    """The type a TypeDecorator stands on (``type_`` itself otherwise)."""
    return type_.impl_instance if isinstance(type_, sa.types.TypeDecorator) else type_


def _processed(fn: Callable[[], Any], processor: Any) -> Callable[[], Any]:
    if not callable(processor):
        return fn
    return lambda: None if (v := fn()) is None else processor(v)


def _arguments(c: _Compiled, params: Params) -> list[Any]:
    args = []
    for name in c.names:
        if name in params:
            value = params[name]
        elif name in c.defaults:
            value = c.defaults[name]()
        else:
            value = c.fixed[name]
        processor = c.processors.get(name)
        args.append(processor(value) if processor is not None and value is not None else value)
    return args


def _as_sqlalchemy_error(exc: BaseException, sql: str) -> BaseException:
    """The driver's error as the SQLAlchemy error the callers (and the tasks' retry rules) know; no
    parameters in it (they may name users and tokens)."""
    import asyncpg

    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return sa.exc.IntegrityError(sql, None, exc)
    lost = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError,
            TimeoutError)  # fmt: skip
    if isinstance(exc, lost):
        return sa.exc.OperationalError(sql, None, exc)
    if isinstance(exc, (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)):
        return sa.exc.OperationalError(sql, None, exc)
    if isinstance(exc, asyncpg.PostgresError):
        return sa.exc.DatabaseError(sql, None, exc)
    return exc


APPLICATION_NAME = "autotrade-batches"  # how the connections show in pg_stat_activity


async def _keep(conn: Any) -> None:
    """A connection given back to the pool as it is: the batches leave no session state (no locks, cursors,
    listeners or settings) behind, so asyncpg's reset would cost a round trip per batch for nothing."""


class BatchPool:
    """The asyncpg connections of one process's batches: a pool per running event loop (threads with loops
    of their own each get theirs), made when first needed there. A pool whose loop has closed is let go."""

    def __init__(self, url: str, size: int = POOL_SIZE) -> None:
        u = sa.engine.make_url(url)
        self._dsn = u.set(drivername="postgresql").render_as_string(hide_password=False)
        self._size = size
        self._pools: dict[asyncio.AbstractEventLoop, asyncio.Future[Any]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "BatchPool()"

    async def pool(self) -> Any:
        loop = asyncio.get_running_loop()
        made = self._pools.get(loop)
        if made is not None:
            return made.result() if made.done() else await asyncio.shield(made)
        import asyncpg

        made = loop.create_future()
        with self._lock:
            for old in [lp for lp in self._pools if lp.is_closed()]:  # their loops ended: let them go
                ended = self._pools.pop(old)
                if ended.done() and not ended.cancelled() and ended.exception() is None:
                    with contextlib.suppress(Exception):
                        ended.result().terminate()
            self._pools[loop] = made
        try:
            # No floor (min_size 0): connections open when calls need them, and a pool does not keep
            # reconnecting in the background to a database that went away.
            pool = await asyncpg.create_pool(
                self._dsn, min_size=0, max_size=self._size, reset=_keep,
                server_settings={"application_name": APPLICATION_NAME},
            )  # fmt: skip
        except BaseException as exc:
            with self._lock:
                self._pools.pop(loop, None)
            error = _as_sqlalchemy_error(exc, "connect")
            made.set_exception(error)
            made.exception()
            raise error from None
        made.set_result(pool)
        return pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A connection of this event loop's pool. A pool closed by :meth:`aclose` between being handed out
        and giving a connection (one run's end, while another in the same loop goes on) is replaced: nothing
        was sent on it yet."""
        import asyncpg

        for attempt in range(3):
            pool = await self.pool()
            try:
                conn = await pool.acquire()
            except asyncpg.InterfaceError:
                if pool.is_closing() and attempt < 2:
                    continue
                raise
            try:
                yield conn
            finally:
                await pool.release(conn)
            return

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One connection in one transaction, committed when the block ends without an error."""
        try:
            async with self.connection() as conn, conn.transaction():
                yield Transaction(conn)
        except sa.exc.SQLAlchemyError:
            raise
        except Exception as exc:
            raise _as_sqlalchemy_error(exc, "transaction") from None

    async def aclose(self) -> None:
        """Close this event loop's pool."""
        with self._lock:
            made = self._pools.pop(asyncio.get_running_loop(), None)
        if made is not None and made.done() and not made.cancelled() and made.exception() is None:
            await made.result().close()


_COMPILED: dict[tuple[int, tuple[str, ...] | None], tuple[Executable, _Compiled]] = {}


def compiled(statement: Executable, keys: Sequence[str] | None = None) -> _Compiled:
    """:func:`compile_for_batches`, once per statement (built once, at import) and set of columns."""
    key = (id(statement), None if keys is None else tuple(keys))
    found = _COMPILED.get(key)
    if found is None or found[0] is not statement:
        found = _COMPILED[key] = (statement, compile_for_batches(statement, keys))
    return found[1]


class Transaction:
    """Statements on one connection in one transaction (asyncpg), each run for a list of calls in one
    pipelined round trip: for writes that must stand or fall together (an account's plan)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def many(
        self, statement: Executable, calls: Sequence[Params], keys: Sequence[str] | None = None
    ) -> list[list[Row]]:
        """Run ``statement`` for each of ``calls``; each call's rows. Several calls go as the statement's
        set form where it has one (an account's ten intents: one INSERT of ten rows)."""
        c = compiled(statement, keys)
        args = [_arguments(c, p) for p in calls]
        whole = set_form_or_none(statement, keys) if len(args) > 1 else None
        try:
            if whole is not None:
                return whole.per_call(await self._conn.fetch(whole.sql, *whole.arguments(args)), len(args))
            if not c.returns:
                await self._conn.executemany(c.sql, args)
                return [[] for _ in args]
            found = await self._conn.fetchmany(c.sql, [[*a, i] for i, a in enumerate(args)])
        except Exception as exc:
            raise _as_sqlalchemy_error(exc, c.sql) from None
        return _rows_by_call(found, len(args))


@dataclass
class _Gathering(Generic[Item, Result]):
    """One event loop's calls of a gatherer: those waiting for a batch, and the batches out."""

    pending: list[tuple[Item, asyncio.Future[Result]]] = field(default_factory=list)
    in_flight: int = 0
    kick_scheduled: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class _Gatherer(Generic[Item, Result]):
    """Calls made concurrently on an event loop, gathered while earlier batches are out and handed to
    :meth:`_execute` together: at most IN_FLIGHT batches out at once, of up to MAX_BATCH calls. A batch
    PostgreSQL refused (it rolled back) runs again call by call. The calls of each event loop gather on
    their own (a batch's futures belong to its loop)."""

    def __init__(self, pool: BatchPool, what: str) -> None:
        self._pool = pool
        self._what = what  # in errors: the statement, or what the group writes
        self._loops: dict[asyncio.AbstractEventLoop, _Gathering[Item, Result]] = {}
        self._lock = threading.Lock()
        self.batches = 0  # round trips (or transactions) made, and calls sent in them (measurements, tests)
        self.calls = 0

    def _gathering(self, loop: asyncio.AbstractEventLoop) -> _Gathering[Item, Result]:
        found = self._loops.get(loop)
        if found is None:
            with self._lock:
                for old in [lp for lp in self._loops if lp.is_closed()]:
                    del self._loops[old]
                found = self._loops[loop] = _Gathering()
        return found

    async def _submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        g = self._gathering(loop)
        done: asyncio.Future[Result] = loop.create_future()
        g.pending.append((item, done))
        if not g.kick_scheduled:
            g.kick_scheduled = True
            loop.call_soon(self._kick, g)  # the calls made in this turn of the loop join the batch
        return await done

    def _kick(self, g: _Gathering[Item, Result]) -> None:
        g.kick_scheduled = False
        while g.pending and g.in_flight < IN_FLIGHT:
            batch, g.pending = self._take(g.pending)
            if not batch:
                continue
            g.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            g.tasks.add(task)
            # The books are kept by the task's end, not by its body: a task cancelled before it first ran
            # (everything a dying step started is cancelled) runs no line of it, and its slot would be lost
            # for good, every later call on this loop left waiting.
            task.add_done_callback(functools.partial(self._flushed, g, batch))

    def _take(
        self, pending: list[tuple[Item, asyncio.Future[Result]]]
    ) -> tuple[list[tuple[Item, asyncio.Future[Result]]], list[tuple[Item, asyncio.Future[Result]]]]:
        """The next batch (up to MAX_BATCH calls not cancelled) and the calls left waiting."""
        return [(a, f) for a, f in pending[:MAX_BATCH] if not f.cancelled()], pending[MAX_BATCH:]

    def _flushed(
        self,
        g: _Gathering[Item, Result],
        batch: list[tuple[Item, asyncio.Future[Result]]],
        task: asyncio.Task[None],
    ) -> None:
        g.tasks.discard(task)
        g.in_flight -= 1
        if task.cancelled() or task.exception() is not None:
            # Whoever still waits learns that the outcome is unknown (the batch may have committed), as with
            # a lost connection; never a cancellation that is not theirs.
            why = ConnectionAbortedError("the batch was stopped before its outcome was known")
            unknown = sa.exc.OperationalError(self._what, None, why)
            for _, done in batch:
                _settle(done, exc=unknown)
        self._kick(g)

    async def _flush(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._execute([a for a, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or not _rolled_back(exc):
                # A lost connection may have lost the commit's answer, not the commit: the calls fail (as a
                # single statement's would), never run a second time.
                for _, done in batch:
                    _settle(done, exc=_as_sqlalchemy_error(exc, self._what))
                return
            why = type(exc).__name__
            log.info("a batch of %d failed (%s): its calls run one by one", len(batch), why)
            for args, done in batch:  # the batch rolled back: each call runs alone, once
                try:
                    (one,) = await self._execute([args])
                except Exception as alone:
                    _settle(done, exc=_as_sqlalchemy_error(alone, self._what))
                else:
                    _settle(done, one)
            return
        for (_, done), result in zip(batch, results, strict=True):
            _settle(done, result)

    async def _execute(self, items: list[Item]) -> list[Result]:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def _connection(self, items: int) -> AsyncIterator[Any]:
        """A pooled connection for one batch of ``items`` (counted). Should the batch fail but for a refusal
        (lost, or cancelled: the query or the commit may still be running there), the connection is in an
        unknown state and terminated: the pool opens a new one in its place."""
        self.batches += 1
        self.calls += items
        async with self._pool.connection() as conn:
            try:
                yield conn
            except BaseException as exc:
                if not _rolled_back(exc):
                    conn.terminate()
                raise


class Batched(_Gatherer[list[Any], list[Row]]):
    """One statement whose concurrent calls go to PostgreSQL in batches (see the module's text)."""

    def __init__(
        self,
        pool: BatchPool,
        statement: Executable,
        keys: Sequence[str] | None = None,
        target: Sequence[str] | None = None,
    ) -> None:
        self._c = compiled(statement, keys)
        self._set = set_form_or_none(statement, keys, target)
        super().__init__(pool, self._c.sql)
        self.set_batches = 0  # batches sent as one statement (the set form)

    def __repr__(self) -> str:
        return f"Batched({self._c.sql[:40]!r}...)"

    async def rows(self, params: Params) -> list[Row]:
        return await self._submit(_arguments(self._c, params))

    async def run(self, params: Params) -> None:
        await self.rows(params)

    def _take(self, pending: _Batch) -> tuple[_Batch, _Batch]:
        """The next batch (up to MAX_BATCH calls not cancelled, at most one per target row) and the calls
        left waiting, in the order they came."""
        target = self._set.target if self._set is not None else ()
        if not target:
            return super()._take(pending)
        batch: _Batch = []
        later: _Batch = []
        seen: set[tuple[Any, ...]] = set()
        for n, (args, done) in enumerate(pending):
            if len(batch) == MAX_BATCH:
                return batch, later + pending[n:]
            if done.cancelled():
                continue
            row = tuple(args[i] for i in target)
            if row in seen:
                later.append((args, done))  # the same row again: after this batch
            else:
                seen.add(row)
                batch.append((args, done))
        return batch, later

    async def _execute(self, calls: list[list[Any]]) -> list[list[Row]]:
        async with self._connection(len(calls)) as conn:
            if self._set is not None and len(calls) > 1:
                self.set_batches += 1
                found = await conn.fetch(self._set.sql, *self._set.arguments(calls))
                return self._set.per_call(found, len(calls))
            if not self._c.returns:
                await conn.executemany(self._c.sql, calls)
                return [[] for _ in calls]
            found = await conn.fetchmany(self._c.sql, [[*a, i] for i, a in enumerate(calls)])
        return _rows_by_call(found, len(calls))


class Grouped(_Gatherer[Unit, Result]):
    """Units of writes that must each stand or fall whole (an account's plan: its signals and its intents),
    made by concurrent callers: the units gathered while earlier groups are out are written by ``write``
    in one transaction, each of its statements once for the whole group (:meth:`Transaction.many`), so a
    group of fifty accounts costs the round trips and the commit one account did. ``write`` returns one
    result per unit, in order. A group PostgreSQL refused (it rolled back: one unit's unique key is held by
    another run, say) is written again unit by unit, each in a transaction of its own, so that error is its
    unit's alone; a group whose connection was lost fails all its units (its commit may have happened)."""

    def __init__(
        self,
        pool: BatchPool,
        write: Callable[[Transaction, list[Unit]], Awaitable[list[Result]]],
        what: str,
    ) -> None:
        super().__init__(pool, what)
        self._write = write

    def __repr__(self) -> str:
        return f"Grouped({self._what!r})"

    async def submit(self, unit: Unit) -> Result:
        """Write ``unit`` with those of the other callers gathered meanwhile; its result once committed."""
        return await self._submit(unit)

    async def _execute(self, units: list[Unit]) -> list[Result]:
        async with self._connection(len(units)) as conn, conn.transaction():
            results = await self._write(Transaction(conn), units)
        if len(results) != len(units):
            raise RuntimeError(f"{self._what}: {len(results)} results for {len(units)} units")
        return results


def _rolled_back(exc: BaseException) -> bool:
    """Whether PostgreSQL refused the batch (its transaction rolled back, nothing of it stays); ``exc`` may be
    the driver's error or the SQLAlchemy error :class:`Transaction` made of it."""
    import asyncpg

    if isinstance(exc, sa.exc.DBAPIError) and isinstance(exc.orig, BaseException):
        exc = exc.orig
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, asyncpg.PostgresConnectionError)


def _settle(done: asyncio.Future[Result], result: Any = None, *, exc: BaseException | None = None) -> None:
    if done.done():
        return
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(result)
