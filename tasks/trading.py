"""Tasks over the trading services. Per-account work runs in batches: one task run per batch of accounts,
asyncio concurrency inside, each account's outcome recorded rather than failing the batch. When an account
hit a transient broker error the batch is retried (with backoff) while retries last: accounts that already
finished do nothing twice, as every order goes through the exactly-once intent protocol."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import date, timedelta
from typing import Any, TypeVar

from prefect import get_run_logger, task

from autotrade.domain.models import ScanRow
from autotrade.runtime import SELL, TRADE, get_runtime, many_accounts_at_once
from autotrade.store.models import ScanBatch
from autotrade.trading.buys import AccountRef
from autotrade.trading.scan import RawScan, parse_scan_payload, validate_scan, wait_for_scan
from tasks.common import RETRY, TRANSIENT, RetryBatch

T = TypeVar("T")
log = logging.getLogger(__name__)


class ScanRejected(Exception):
    """The scan failed validation; nothing is ordered from it (not retried)."""


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except Exception:  # called outside a run (plain function tests)
        return log


@task(name="validate_scan", persist_result=False)
async def validate_scan_task(
    day: date, scan: str | None = None, payload: dict[str, Any] | None = None
) -> int:
    """Read and validate the day's scan; store the batch; raise ScanRejected when it fails. A scan read
    from its location is waited for up to ``scan_wait_minutes`` (none yet, a file still being written, an
    S3 error), then :class:`~autotrade.trading.scan.ScanUnavailable` says what was seen."""
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
    with rt.db.unit_of_work() as s:
        existing = s.query(ScanBatch).filter_by(trading_day=day, content_hash=raw.content_hash).one_or_none()
        if existing is None:
            existing = ScanBatch(
                trading_day=day, source=raw.source[:500], content_hash=raw.content_hash, status=status,
                row_count=result.row_count, report=result.to_json(),
                payload=json.dumps([asdict(r) for r in result.rows], ensure_ascii=False),
            )  # fmt: skip
            s.add(existing)
            s.flush()
        batch_id = existing.id
    await acreate_markdown_artifact(
        key="scan-validation", markdown=f"{result.report()}\n\nsource: `{raw.source}`", description=status
    )
    if not result.success:
        raise ScanRejected(result.report())
    _logger().info("scan %s accepted: %d rows", raw.source, result.row_count)
    return batch_id


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
    failure retries the batch."""
    sem = asyncio.Semaphore(at_once or account_slots(len(accounts)))

    async def one(ref: AccountRef) -> T | BaseException:
        async with sem:
            try:
                return await work(ref)
            except Exception as exc:
                _logger().warning("%s/%s failed: %s", ref.user_id, ref.account_no, type(exc).__name__)
                return exc

    results = await asyncio.gather(*(one(AccountRef(u, a)) for u, a in accounts))
    if retry_transient:
        _retry_if_transient(results)
    return results


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


@task(name="place_buy_orders", **RETRY)
async def place_buy_orders(
    batch_id: int,
    accounts: list[tuple[str, str]],
    day: date,
    dry_run: bool = False,
    caps: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Plan and send a batch of accounts' buys: exactly once per intent, so a re-run places nothing twice."""
    rt = get_runtime()
    rows = scan_rows(batch_id)
    # Sending is paced per key (about one order a second), so as many accounts send at once as a batch works
    # on, and as many again are planned meanwhile: the next account is ready when a sending slot frees.
    slots = account_slots(len(accounts))
    sending = asyncio.Semaphore(slots)

    async def work(ref: AccountRef) -> object:
        broker = await rt.brokers.for_account(ref, TRADE, spend_cap=rt.settings.max_daily_investment)
        prepared = await rt.buys.prepare(ref, broker, rows, day, batch_id, dry_run, caps)
        async with sending:
            return await rt.buys.send(prepared, broker)

    try:
        with many_accounts_at_once():
            results = await for_each_account(accounts, work, retry_transient=True, at_once=2 * slots)
    finally:
        if rt.worker_process:  # this task's event loop ends with it, and the broker client with the loop
            await rt.brokers.aclose()
    return [_outcome(a, r) for a, r in zip(accounts, results, strict=True)]


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


@task(name="reconcile_accounts", **RETRY)
async def reconcile_accounts(accounts: list[tuple[str, str]], day: date) -> list[dict[str, Any]]:
    """Reconcile orders, fills and holdings with the broker; resume sells left unsent."""
    rt = get_runtime()

    async def work(ref: AccountRef) -> object:
        broker = await rt.brokers.for_account(ref, SELL)
        return await rt.reconciler.reconcile_account(ref, broker, day)

    results = await for_each_account(accounts, work, retry_transient=True)
    return [_outcome(a, r) for a, r in zip(accounts, results, strict=True)]


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
