"""Tasks over the trading services. Per-account work runs in batches: one task run per batch of accounts,
asyncio concurrency inside, each account's outcome recorded rather than failing the batch. When an account
hit a transient broker error the batch is retried (with backoff) while retries last: accounts that already
finished do nothing twice, as every order goes through the exactly-once intent protocol.

The evening buys of a batch are a chain of tasks, each with its own retries and logs, so the run's graph
shows where a batch stands and a transient failure retries only the step it happened in:
``retrieve_broker_tokens`` (each account opened through the vault and its cash and holdings read) ->
``check_risk`` (the plan sized by the risk limits and recorded as intents; no broker call) ->
``place_orders`` (each intent sent exactly once). Batches run at once: a batch's risk check runs while
another batch sends. What one step hands the next (the open account, its view, its plan) stays in this
process (:class:`BuyChain`); a step's Prefect result is its per-account report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any, TypeVar

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.exc import OperationalError

from autotrade.domain.models import ScanRow
from autotrade.runtime import SELL, TRADE, get_runtime, many_accounts_at_once
from autotrade.store.models import ScanBatch
from autotrade.trading.buys import AccountRef, BuyOutcome, PreparedBuys
from autotrade.trading.ports import AccountBroker, AccountView, NotProcessed
from autotrade.trading.scan import RawScan, parse_scan_payload, validate_scan, wait_for_scan
from tasks.common import RETRY, TRANSIENT, RetryBatch
from tasks.notifications import tell_buys

T = TypeVar("T")
log = logging.getLogger(__name__)


class ScanRejected(Exception):
    """The scan failed validation; nothing is ordered from it (not retried)."""


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except Exception:  # called outside a run (plain function tests)
        return log


# What a retry of the scan's intake can cure: the database storing the batch busy or away, the network or
# the Prefect API failing for a moment. Not a malformed or rejected scan (ScanFormatError is a ValueError),
# nor ScanUnavailable: the intake already waited for the scan until its deadline.
STORAGE_TRANSIENT: tuple[type[BaseException], ...] = (OperationalError, OSError, httpx.TransportError)


def is_storage_transient(task: Any, task_run: Any, state: Any) -> bool:
    error = getattr(state, "data", None)
    return isinstance(error, STORAGE_TRANSIENT)


@task(name="validate_scan", **{**RETRY, "retry_condition_fn": is_storage_transient})
async def validate_scan_task(
    day: date, scan: str | None = None, payload: dict[str, Any] | None = None
) -> int:
    """Read and validate the day's scan; store the batch; raise ScanRejected when it fails. A scan read
    from its location is waited for up to ``scan_wait_minutes`` (none yet, a file still being written, an
    S3 error), then :class:`~autotrade.trading.scan.ScanUnavailable` says what was seen. A transient
    storage error (the database, the network) retries the task; a malformed or rejected scan does not."""
    from prefect.artifacts import acreate_markdown_artifact

    rt = get_runtime()
    if payload is not None:
        raw: RawScan = parse_scan_payload(payload)
    else:
        raw = await wait_for_scan(
            scan or rt.settings.scan_location, day,
            deadline=rt.clock() + timedelta(minutes=rt.settings.scan_wait_minutes),
            poll_seconds=rt.settings.scan_poll_seconds, clock=rt.clock, wait_until=rt.time.wait_until,
            log=_logger(),
        )  # fmt: skip
    result = validate_scan(
        raw, trading_day=day, now=rt.clock(), max_age=timedelta(minutes=rt.settings.scan_max_age_minutes)
    )
    status = "ACCEPTED" if result.success else "REJECTED"
    batch_id = await rt.db.run(_store_scan_batch, day, raw, result, status)
    await acreate_markdown_artifact(
        key="scan-validation", markdown=f"{result.report()}\n\nsource: `{raw.source}`", description=status
    )
    if not result.success:
        raise ScanRejected(result.report())
    _logger().info("scan %s accepted: %d rows", raw.source, result.row_count)
    return batch_id


def _store_scan_batch(day: date, raw: RawScan, result: Any, status: str) -> int:
    """The scan's batch row (one per day and content: a re-run finds the one stored)."""
    with get_runtime().db.unit_of_work() as s:
        existing = s.query(ScanBatch).filter_by(trading_day=day, content_hash=raw.content_hash).one_or_none()
        if existing is None:
            existing = ScanBatch(
                trading_day=day, source=raw.source[:500], content_hash=raw.content_hash, status=status,
                row_count=result.row_count, report=result.to_json(),
                payload=json.dumps([asdict(r) for r in result.rows], ensure_ascii=False),
            )  # fmt: skip
            s.add(existing)
            s.flush()
        return int(existing.id)


def scan_rows(batch_id: int) -> list[ScanRow]:
    rt = get_runtime()
    with rt.db.unit_of_work() as s:
        batch = s.get_one(ScanBatch, batch_id)
        data = json.loads(batch.payload or "[]")
    return [
        ScanRow(d["code"], d["name"], d["score"], d["price"], tuple(d.get("reasons") or ())) for d in data
    ]


@task(name="list_accounts")
def list_accounts(users: list[str] | None = None, trading_only: bool = True) -> list[tuple[str, str]]:
    """Accounts to work on: active keys (with auto-trading enabled), optionally only ``users``."""
    return [(a.user_id, a.account_no) for a in get_runtime().accounts(users, trading_only=trading_only)]


def account_slots(accounts: int) -> int:
    """Accounts worked on at once: ``account_concurrency`` per batch. A task given several batches' worth
    of accounts (a worker process's share) works on as many at once as that many batches would."""
    settings = get_runtime().settings
    return settings.account_concurrency * max(1, -(-accounts // settings.batch_size))


async def for_each_account(
    accounts: Sequence[tuple[str, str]],
    work: Callable[[AccountRef], Awaitable[T]],
    *,
    retry_transient: bool = False,
    at_once: int | None = None,
) -> list[T | BaseException]:
    """Run ``work`` for every account, ``at_once`` (default :func:`account_slots`) at a time; an account's
    failure is its outcome. With ``retry_transient`` (tasks with retries, idempotent work) a transient
    failure retries the batch, and the retry works only on the accounts that did not succeed: the others'
    outcomes are kept from the earlier attempt (so a report counts what they did then)."""
    sem = asyncio.Semaphore(at_once or account_slots(len(accounts)))
    memo = _attempts_memo() if retry_transient else None

    async def one(ref: AccountRef) -> T | BaseException:
        if memo is not None and ref in memo:
            return memo[ref]  # type: ignore[no-any-return]
        async with sem:
            try:
                result = await work(ref)
            except Exception as exc:
                _logger().warning("%s/%s failed: %s", ref.user_id, ref.account_no, type(exc).__name__)
                return exc
        if memo is not None:
            memo[ref] = result
        return result

    results = await asyncio.gather(*(one(AccountRef(u, a)) for u, a in accounts))
    if retry_transient:
        retrying = False
        try:
            _retry_if_transient(results)
        except RetryBatch:
            retrying = True  # the memo stays for the retry
            raise
        finally:
            if memo is not None and not retrying:
                _SUCCEEDED.pop(_task_run_id() or "", None)
    return results


# Per task run with retries: the accounts that succeeded in an earlier attempt, and their outcomes.
_SUCCEEDED: dict[str, dict[AccountRef, object]] = {}


def _task_run_id() -> str | None:
    from prefect.runtime import task_run

    run_id = task_run.id
    return str(run_id) if run_id else None


def _attempts_memo() -> dict[AccountRef, object] | None:
    run_id = _task_run_id()
    return None if run_id is None else _SUCCEEDED.setdefault(run_id, {})


def _retry_if_transient(results: Sequence[object]) -> None:
    """Raise :class:`RetryBatch` when some account failed transiently and the task has retries left."""
    from prefect.runtime import task_run

    transient = [r for r in results if isinstance(r, TRANSIENT)]
    if not transient:
        return
    run_count = task_run.run_count or 0  # 0 outside a task run: nothing to retry
    if 0 < run_count <= int(RETRY["retries"]):
        raise RetryBatch(
            f"{len(transient)} of {len(results)} accounts hit a transient error "
            f"({', '.join(sorted({type(r).__name__ for r in transient}))}); retrying the batch"
        )


def _outcome(ref_pair: tuple[str, str], value: object) -> dict[str, Any]:
    if isinstance(value, BaseException):
        return {"user_id": ref_pair[0], "account_no": ref_pair[1], "error": type(value).__name__}
    return asdict(value)  # type: ignore[call-overload, no-any-return]


@dataclass(slots=True)
class OpenAccount:
    """An account of a batch as the chain's steps hand it on: its broker session (a temporary token over
    the broker token), the cash and holdings read with it, then its plan, then what was sent."""

    broker: AccountBroker
    view: AccountView
    prepared: PreparedBuys | None = None
    sent: BuyOutcome | None = None


@dataclass(slots=True)
class BuyChain:
    """One batch's evening buys in this process: what its steps hand on (never a Prefect result)."""

    batch_id: int
    day: date
    dry_run: bool = False
    caps: dict[str, int] | None = None
    # Sending slots shared by the batches of a run (sending is paced per key, so it is the long part);
    # without, a batch sends ``account_slots`` accounts at once.
    sending: asyncio.Semaphore | None = None
    accounts: dict[AccountRef, OpenAccount] = field(default_factory=dict)


_CHAINS: dict[str, BuyChain] = {}


def _chain(key: str) -> BuyChain:
    try:
        return _CHAINS[key]
    except KeyError:
        raise LookupError(f"no evening batch {key} in this process") from None


def _row(pair: tuple[str, str], value: object) -> dict[str, Any]:
    if isinstance(value, BaseException) or not isinstance(value, dict):
        return _outcome(pair, value)
    return {"user_id": pair[0], "account_no": pair[1], **value}


@task(name="retrieve_broker_tokens", **RETRY)
async def retrieve_broker_tokens(chain: str, accounts: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Open each account of the batch through the vault: a temporary token for trading (capped by the
    daily investment limit), the broker token behind it (from memory, else the sealed cache, else one KMS
    Decrypt and an issue: one Decrypt per user per day), and the account's cash and holdings read with it,
    which the risk check plans from. An account that fails is reported (``error``); a transient failure
    retries the step, where accounts already open are not opened again."""
    rt = get_runtime()
    c = _chain(chain)

    async def work(ref: AccountRef) -> object:
        opened = c.accounts.get(ref)
        if opened is None:
            broker = await rt.brokers.for_account(ref, TRADE, spend_cap=rt.settings.max_daily_investment)
            opened = c.accounts[ref] = OpenAccount(broker, await broker.account())
        return {"cash": opened.view.cash, "holdings": len(opened.view.holdings)}

    slots = account_slots(len(accounts))
    results = await for_each_account(accounts, work, retry_transient=True, at_once=2 * slots)
    return [_row(a, r) for a, r in zip(accounts, results, strict=True)]


@task(name="check_risk", **RETRY)
async def check_risk(
    chain: str, accounts: list[tuple[str, str]], after: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Size each open account's buys by its risk limits (daily investment, stock count, per stock; a run's
    ``caps`` only tighten them) against the cash and holdings read, and record its signals and buy intents
    (an account planned earlier today keeps its plan). No broker call."""
    rt = get_runtime()
    c = _chain(chain)
    rows = scan_rows(c.batch_id)
    todo = [a for a in accounts if AccountRef(*a) in c.accounts]

    async def work(ref: AccountRef) -> object:
        opened = c.accounts[ref]
        if opened.prepared is None:
            opened.prepared = await rt.buys.prepare(
                ref, None, rows, c.day, c.batch_id, c.dry_run, c.caps, view=opened.view
            )
        p = opened.prepared
        return {
            "intents": len(p.intents),
            "planned": len(p.outcome.placed),
            "skipped": len(p.outcome.skipped),
        }

    results = await for_each_account(todo, work, retry_transient=True, at_once=2 * account_slots(len(todo)))
    return [_row(a, r) for a, r in zip(todo, results, strict=True)]


@task(name="place_orders", **RETRY)
async def place_orders(
    chain: str, accounts: list[tuple[str, str]], after: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Send each planned intent exactly once (the intent protocol): a re-run or a retry sends nothing
    twice. An order the broker did not process (``NotProcessed``) retries the step; on a retry each
    account's intents are read again as they stand."""
    rt = get_runtime()
    c = _chain(chain)
    rows = scan_rows(c.batch_id)
    todo = [a for a in accounts if (o := c.accounts.get(AccountRef(*a))) is not None and o.prepared]

    async def work(ref: AccountRef) -> object:
        opened = c.accounts[ref]
        if opened.sent is not None and not _not_processed(opened.sent):
            return opened.sent
        prepared = opened.prepared
        if prepared is None:
            raise LookupError("account not planned")
        if opened.sent is not None:  # a retry: the intents as they stand now
            prepared = await rt.buys.prepare(
                ref, None, rows, c.day, c.batch_id, c.dry_run, c.caps, view=opened.view
            )
        async with c.sending or contextlib.nullcontext():
            opened.sent = await rt.buys.send(prepared, opened.broker)
        return opened.sent

    at_once = len(todo) if c.sending else account_slots(len(todo))
    results = await for_each_account(todo, work, at_once=max(1, at_once))
    _retry_if_transient([NotProcessed() if isinstance(r, BuyOutcome) and _not_processed(r) else r
                         for r in results])  # fmt: skip
    return [_outcome(a, r) for a, r in zip(todo, results, strict=True)]


def _not_processed(out: BuyOutcome) -> bool:
    return any(why == NotProcessed.__name__ for _, why in out.failed)


def opaque(value: T) -> T:
    """``value`` as a task's parameter that Prefect passes on without visiting its items (inside a run; the
    plain functions of :func:`in_run` take it as it is)."""
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.utilities.annotations import quote

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return value
    return quote(value)  # type: ignore[return-value]  # unwrapped before the task's function gets it


def in_run(t: Any) -> Any:
    """The task itself inside a flow or task run (its own task run, retries and logs), else its plain
    function (tests driving the services without Prefect)."""
    from prefect.context import FlowRunContext, TaskRunContext

    return t if FlowRunContext.get() is not None or TaskRunContext.get() is not None else t.fn


async def buy_batch(
    batch_id: int,
    accounts: list[tuple[str, str]],
    day: date,
    dry_run: bool = False,
    caps: dict[str, int] | None = None,
    *,
    preparing: asyncio.Semaphore | None = None,
    sending: asyncio.Semaphore | None = None,
) -> list[dict[str, Any]]:
    """One batch's evening buys through the chain of tasks; its accounts' outcomes in their order. An
    account that failed at a step keeps that step's error and goes no further. ``preparing`` bounds the
    batches opening accounts and checking risk at once, ``sending`` the accounts sending at once."""
    accounts = [(u, n) for u, n in accounts]
    key = f"{batch_id}-{uuid.uuid4().hex[:12]}"
    _CHAINS[key] = BuyChain(batch_id, day, dry_run, caps, sending)
    failed: dict[tuple[str, str], dict[str, Any]] = {}

    def report(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            if row.get("error"):
                failed.setdefault((row["user_id"], row["account_no"]), row)
        return rows

    # The account list is handed over as it is: Prefect need not look for futures among its pairs.
    listed = opaque(accounts)
    try:
        async with preparing or contextlib.nullcontext():
            opened = report(await in_run(retrieve_broker_tokens)(key, listed))
            # ``after``: each step follows the one before it (the run graph draws the chain's edges). One
            # row of the step's result is enough for Prefect to know which task run it came from (it links
            # a result's items one level deep); the whole list would have it walk 500 rows twice per task.
            planned = report(await in_run(check_risk)(key, listed, after=opened[:1]))
        # the next batch prepares meanwhile
        report(await in_run(place_orders)(key, listed, after=planned[:1]))
        done = _CHAINS[key].accounts
        out: list[dict[str, Any]] = []
        for a in accounts:
            opened = done.get(AccountRef(*a))
            if a in failed or opened is None or opened.sent is None:
                out.append(failed.get(a) or {"user_id": a[0], "account_no": a[1], "error": "NotPlanned"})
            else:
                out.append(_as_row(opened.sent))
        return out
    finally:
        _CHAINS.pop(key, None)


def _as_row(out: BuyOutcome) -> dict[str, Any]:
    """``asdict(out)``, without copying each placed order's tuple once more."""
    return {"user_id": out.user_id, "account_no": out.account_no, "placed": out.placed,
            "skipped": out.skipped, "failed": out.failed, "error": out.error}  # fmt: skip


PREPARING_AHEAD = 2  # batches opening accounts and checking risk at once


async def buy_batches(
    batch_id: int,
    accounts: list[tuple[str, str]],
    day: date,
    dry_run: bool = False,
    caps: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """The evening buys of ``accounts`` in batches pipelined (the broker clients belong to this event
    loop): a batch is at most ``account_concurrency`` accounts (and at most ``batch_size``); while earlier
    batches send, :data:`PREPARING_AHEAD` later ones open their accounts and check risk, and as many
    accounts send at once as :func:`account_slots` allows for all of them (a batch sends as soon as it is
    planned, so the sending slots, paced per key, never wait for a whole run's planning)."""
    settings = get_runtime().settings
    size = max(1, min(settings.batch_size, settings.account_concurrency))
    preparing = asyncio.Semaphore(PREPARING_AHEAD)
    sending = asyncio.Semaphore(account_slots(len(accounts)))
    with many_accounts_at_once():
        done = await asyncio.gather(
            *(
                buy_batch(batch_id, part, day, dry_run, caps, preparing=preparing, sending=sending)
                for part in chunks(accounts, size)
            )
        )
    return [o for b in done for o in b]


async def buy_share(
    batch_id: int,
    accounts: list[tuple[str, str]],
    day: date,
    dry_run: bool = False,
    caps: dict[str, int] | None = None,
    notify: bool = False,
) -> list[dict[str, Any]]:
    """:func:`buy_batches`, then (with ``notify``) the share's users told of their orders: by the process
    that placed them, as soon as its share is done. Telling them failing (the database away) fails no
    order: it is logged, and a re-run of the day tells those not told."""
    outcomes = await buy_batches(batch_id, accounts, day, dry_run, caps)
    if notify and not dry_run:
        try:
            await tell_buys(outcomes, day)
        except Exception as exc:
            log.error("the users of %d accounts were not told of their orders (%s); a re-run of the day "
                      "tells them", len(accounts), type(exc).__name__)  # fmt: skip
    return outcomes


@task(name="buy_share", persist_result=False, cache_policy=NO_CACHE)
async def place_buy_orders(
    batch_id: int,
    accounts: list[tuple[str, str]],
    day: date,
    dry_run: bool = False,
    caps: dict[str, int] | None = None,
    notify: bool = False,
) -> list[dict[str, Any]]:
    """A worker process's share of the evening buys: its batches through the chain, each step a task of
    its own under this one (which does not retry: its steps do), then its users told (``notify``). Exactly
    once per intent, so a re-run places nothing twice."""
    rt = get_runtime()
    try:
        return await buy_share(batch_id, accounts, day, dry_run, caps, notify)
    finally:
        if rt.worker_process:  # this task's event loop ends with it, and the broker client with the loop
            await rt.brokers.aclose()


@task(name="confirm_fills", **RETRY)
async def confirm_fills(accounts: list[tuple[str, str]], day: date) -> list[dict[str, Any]]:
    """Apply the broker's fills of ``day``; completed buys open positions and arm their exits."""
    rt = get_runtime()

    async def work(ref: AccountRef) -> object:
        broker = await rt.brokers.for_account(ref, SELL)
        report = await rt.reconciler.reconcile_account(ref, broker, day, resume_sells=False)
        return report

    results = await for_each_account(accounts, work, retry_transient=True)
    return [_outcome(a, r) for a, r in zip(accounts, results, strict=True)]


# The watch waits on its reconciliation: retries come quickly (a tick read late is a stop fired late).
_RECONCILE_RETRY: dict[str, Any] = {**RETRY, "retry_delay_seconds": [0.5, 1.0, 2.0]}


@task(name="reconcile_positions", **_RECONCILE_RETRY)
async def reconcile_positions(day: date, users: list[str] | None = None) -> dict[str, Any]:
    """The intraday watch's periodic pass: every watched account's orders, fills and holdings reconciled
    with the broker, tier fills told, sells left unsent resumed (exactly once). An account's transient
    failure retries the pass; one that still fails is counted, and the watch goes on."""
    from tasks.exits import notify_tier_fills, send_sell

    rt = get_runtime()
    accounts = [(a.user_id, a.account_no) for a in rt.accounts(users, trading_only=False)]

    async def work(ref: AccountRef) -> object:
        broker = await rt.brokers.for_account(ref, SELL)
        report = await rt.reconciler.reconcile_account(ref, broker, day)
        if report.sync is not None:
            notify_tier_fills(rt, ref.user_id, report.sync.sell_fills)
        for sell in report.pending_sells:
            await send_sell(rt, sell, day)
        return report

    results = await for_each_account(accounts, work, retry_transient=True)
    failed = [a for a, r in zip(accounts, results, strict=True) if isinstance(r, BaseException)]
    return {"accounts": len(accounts), "with_errors": len(failed)}


@task(name="arm_exits", **RETRY)
def arm_exits(users: list[str] | None = None) -> dict[str, Any]:
    """Load every open position's three-tier exit into the book (persisted: the watch and a restarted
    watch read the same); the armed count and one row per position."""
    rt = get_runtime()
    armed = rt.engine.load(users)
    table = [
        {
            "user": rt.engine.owner(k)[0], "account": rt.engine.owner(k)[1], "code": st.code,
            "held": st.held, "entry": st.entry_price, "stop_loss": st.prices.stop_loss,
            "preserve": st.prices.preserve, "take_profit": st.prices.take_profit, "status": st.status.value,
        }
        for k, st in rt.engine.book
    ]  # fmt: skip
    return {"armed": armed, "table": table}


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
