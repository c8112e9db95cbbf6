"""Where the evening's buys are placed: in this process (or its worker processes), or fanned out over the work
pool as runs of the ``place-buys`` deployment (``AUTOTRADE_EVENING_FANOUT=deployment``), so that any worker
on any machine takes a share.

The fan-out, per share of accounts:

1. the evening run cuts its accounts into shares of ``evening_fanout_share_size`` (or a little more: a user's
   accounts stay in one share, whose run tells the user of their orders); share ``i`` is known by the lease
   name ``buys:<evening run id>:<i>``;
2. it starts one run of the deployment per share (``run_deployment(..., timeout=0)``, a subflow run of the
   evening's), whose parameters are the trading day, the scan batch's id, the share's user and account
   numbers, the run's caps and the lease name: never a key or a secret. The idempotency key
   ``<evening run id>:<i>:<attempt>`` lets a retried evening run find the runs it started;
3. the child holds the share's lease (``autotrade.store.leases``, the price watch's) while it works, renewing
   it every third of ``evening_fanout_lease_seconds``; it places the share's buys through the same tasks
   as the in-process path (the vault gateway, the exactly-once order protocol), records one row per account
   as its ``buy-share-outcome`` table artifact, and marks the lease finished;
4. every ``evening_fanout_poll_seconds`` the evening reads its children's states and leases. A child that
   ended with its outcome artifact (Completed, or Failed because accounts failed) is done. A child that
   crashed, ended without an outcome, or is Running or Pending with its lease expired (its process, worker
   or machine died: nobody tells Prefect then) is marked Crashed and its share is started again, at most
   ``evening_fanout_attempts`` runs in all. A re-run is safe even beside a child that is still alive: an
   intent is sent only by the run whose ``NEW -> SUBMITTING`` lands, and one found in flight is reconciled
   with the broker's orders before anything is sent again;
5. a share with no outcome after its last attempt (or whose run was cancelled) reports each of its accounts
   as failed, so the evening run ends Failed and says which.

Scheduled and Late children are waited for, up to ``evening_fanout_start_minutes`` after the run was
submitted: a share no worker has started by then (a work pool without workers, or too few; the run list
shows it Late) is cancelled, so that no worker starts it later, and its accounts fail with the reason.
A dry run is planned in the evening's own process (it sends nothing, and its
summary lists every planned order).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from autotrade.config import Settings, usable_cores
from autotrade.runtime import get_runtime
from autotrade.store.leases import Lease, LeaseState, process_holder
from autotrade.store.models import WatcherLease
from autotrade.store.types import utcnow
from flows.common import in_worker_processes
from tasks.trading import buy_share, chunks, place_buy_orders

log = logging.getLogger(__name__)

SHARE_OUTCOME = "buy-share-outcome"  # the child's artifact: one row per account of its share
READ_AT_ONCE = 200  # flow runs per read (the Prefect API's default page)


# With worker_processes "auto", accounts an extra worker process must have to be started: its start-up (2 s
# of imports, its runtime and task engine: 5 s in all on a 2-core machine) against the CPU it takes off this
# process (1,000 users: 28 s in one process, every batch under way within 3 s; 10,000 users: 106 s in one
# process, 87-95 s in two).
AUTO_ACCOUNTS_PER_PROCESS = 2_000

# How much more than an equal share the run's own process takes when it shares the buys with worker
# processes: it starts at once, their first orders come about 4 s later. Measured at 10,000 users on 2
# cores with equal shares: this process's share (its notices included) done 56.0 s into the buys, the
# worker's 62.8 s.
HERE_EXTRA = 0.06


def planned_processes(settings: Settings, accounts: int, cores: int | None = None) -> int:
    """How many processes the evening's ``accounts`` are shared among, this one and worker processes (1:
    this one alone): never more than their batches; with ``worker_processes`` "auto", one per core
    (``cores``, else those this process may use) for every AUTO_ACCOUNTS_PER_PROCESS accounts, and this one
    alone on SQLite."""
    batches = -(-accounts // settings.batch_size)
    if settings.worker_processes != "auto":
        return max(1, min(settings.worker_processes, batches))
    if settings.database_url.startswith("sqlite"):
        return 1
    usable = usable_cores() if cores is None else cores
    return max(1, min(usable, batches, accounts // AUTO_ACCOUNTS_PER_PROCESS))


def shares_of(accounts: Sequence[tuple[str, str]], size: int) -> list[list[tuple[str, str]]]:
    """``accounts`` (user, account number) in shares of ``size`` or a little more: a user's accounts are
    never split between two shares, since each share tells its own users of their orders. Each user's
    accounts come together, in the order the users first appear."""
    by_user: dict[str, list[tuple[str, str]]] = {}
    for user, account in accounts:
        by_user.setdefault(user, []).append((user, account))
    shares: list[list[tuple[str, str]]] = [[]]
    for mine in by_user.values():
        if len(shares[-1]) >= size:
            shares.append([])
        shares[-1] += mine
    return [s for s in shares if s]


async def place_here(
    batch_id: int,
    accounts: Sequence[tuple[str, str]],
    day: date,
    dry_run: bool = False,
    caps: dict[str, int] | None = None,
    notify: bool = False,
) -> list[dict[str, Any]]:
    """The buys of ``accounts`` placed from this process: in batches pipelined in its event loop, or shared
    among the processes :func:`planned_processes` plans, this one taking the first share while worker
    processes of this machine take the others. With ``notify`` each share's users are told of their orders
    by the process that placed them, once its share is done. One outcome per account, share by share (a
    user's accounts together)."""
    rt = get_runtime()
    accounts = [(u, a) for u, a in accounts]
    processes = planned_processes(rt.settings, len(accounts))
    # Each share's batches a chain of tasks (retrieve_broker_tokens, check_risk, place_orders), pipelined
    # in its process's event loop (the broker clients belong to it).
    if processes <= 1:
        return await buy_share(batch_id, accounts, day, dry_run, caps, notify)
    # This process starts on its share at once, the worker processes some seconds later (their start-up):
    # it takes HERE_EXTRA more than an equal share, the others share the rest.
    here = shares_of(accounts, math.ceil(len(accounts) / processes * (1 + HERE_EXTRA)))[0]
    taken = set(here)
    rest = [a for a in accounts if a not in taken]
    if not rest:
        return await buy_share(batch_id, here, day, dry_run, caps, notify)
    there = shares_of(rest, -(-len(rest) // (processes - 1)))
    common = {"batch_id": batch_id, "day": day, "dry_run": dry_run, "caps": caps, "notify": notify}
    elsewhere = [{**common, "accounts": part} for part in there]
    # Both sides are waited for before anything is reported, whatever one of them raised.
    mine, theirs = await asyncio.gather(
        buy_share(batch_id, here, day, dry_run, caps, notify),
        in_worker_processes(place_buy_orders, elsewhere),
        return_exceptions=True,
    )
    if isinstance(mine, BaseException):
        raise mine
    if isinstance(theirs, BaseException):
        raise theirs
    return [*mine, *(o for b in theirs for o in b)]


# --- the child's side ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def holding_share(name: str | None) -> AsyncIterator[None]:
    """Hold the share's lease while the block runs (renewed every third of its time to live), then mark it
    finished: the evening run takes a share whose lease expired as a dead child."""
    if not name:
        yield
        return
    rt = get_runtime()
    lease = Lease(rt.db, name, timedelta(seconds=rt.settings.evening_fanout_lease_seconds))
    holder = process_holder()
    state = await rt.db.run(lease.acquire, holder)
    if not state.acquired:  # an earlier run of the share may still be alive: sending beside it is safe
        log.warning("share %s: lease held by %s; working beside it", name, state.holder)
    keeper = asyncio.create_task(_keep(lease, holder), name=f"lease {name}")
    try:
        yield
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        await rt.db.run(lease.release, holder, utcnow())  # finished: watched_until set


async def _keep(lease: Lease, holder: str) -> None:
    rt = get_runtime()
    while True:
        await asyncio.sleep(lease.ttl.total_seconds() / 3)
        try:
            if not await rt.db.run(lease.renew, holder):
                await rt.db.run(lease.acquire, holder)
        except Exception as exc:  # the database away for a moment: the lease has some time left
            log.warning("share lease %s not renewed: %s", lease.name, type(exc).__name__)


def share_rows(outcomes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The child's outcome artifact: per account its orders sent (code, quantity, price), the buys that
    failed (code, error) and the account's own error."""
    return [
        {"user_id": o["user_id"], "account_no": o["account_no"],
         "placed": [list(p) for p in o.get("placed") or []],
         "failed": [list(f) for f in o.get("failed") or []], "error": o.get("error")}
        for o in outcomes
    ]  # fmt: skip


# --- the evening's side ----------------------------------------------------------------------------------


@dataclass
class Share:
    index: int
    accounts: list[tuple[str, str]]
    lease: str
    attempt: int = 0
    run_id: Any = None
    runs: list[str] = field(default_factory=list)
    submitted: datetime | None = None  # when its current run was started
    outcome: list[dict[str, Any]] | None = None
    ended: str = ""

    @property
    def open(self) -> bool:
        return self.outcome is None


def silent(state: Any, lease: LeaseState | None, now: datetime, ttl: timedelta) -> bool:
    """Whether a child in ``state`` (Pending or Running, as of ``state.timestamp``) has gone silent: its
    share's lease (``lease``, perhaps an earlier attempt's) expired since it started, or never taken within
    ``ttl`` of its start (3 x ``ttl`` while Pending: the worker may still be preparing its process). A lease
    marked finished gives the run ``ttl`` more to report its final state."""
    if not (state.is_running() or state.is_pending()):
        return False
    if lease is not None and lease.watched_until is not None:
        return now > lease.expires_at + ttl
    started: datetime = state.timestamp
    if lease is not None and lease.expires_at > started:
        return now > lease.expires_at  # taken by this run (or renewed since it started), then not renewed
    return now > started + (ttl if state.is_running() else 3 * ttl)


def _leases(names: Sequence[str]) -> dict[str, LeaseState]:
    t = WatcherLease.__table__
    with get_runtime().db.statement() as conn:
        rows = conn.execute(
            sa.select(t.c.name, t.c.holder, t.c.expires_at, t.c.watched_until).where(t.c.name.in_(names))
        ).all()
    return {r.name: LeaseState(False, r.holder, r.expires_at, r.watched_until) for r in rows}


async def fan_out(
    batch_id: int, accounts: Sequence[tuple[str, str]], day: date, caps: dict[str, int] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The buys of ``accounts`` as child runs of the place-buys deployment, one per share, waited for and
    re-run when one crashed (the module's protocol). Returns one outcome per account, share by share (a
    user's accounts together), and one row per share (its runs, how it ended)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    rt = get_runtime()
    s = rt.settings
    parent = str(flow_run.id)
    parts = shares_of([(u, a) for u, a in accounts], s.evening_fanout_share_size)
    shares = [Share(i, part, f"buys:{parent}:{i}") for i, part in enumerate(parts)]
    ttl = timedelta(seconds=s.evening_fanout_lease_seconds)
    async with get_client() as client:
        await _deployment_exists(client, s.evening_fanout_deployment)
        await asyncio.gather(*(_start(sh, day, batch_id, caps, parent, len(shares)) for sh in shares))
        while any(sh.open for sh in shares):
            await asyncio.sleep(s.evening_fanout_poll_seconds)
            try:
                await _check(client, [sh for sh in shares if sh.open], day, batch_id, caps, parent, ttl,
                             len(shares))  # fmt: skip
            except (httpx.HTTPError, OperationalError) as exc:  # the API or the database away for a moment
                _logger().warning("could not read the shares' runs (%s); trying again", type(exc).__name__)
    outcomes = [o for sh in shares for o in sh.outcome or []]
    report = [
        {"share": sh.index + 1, "accounts": len(sh.accounts), "runs": len(sh.runs), "ended": sh.ended,
         "orders": sum(len(o.get("placed") or []) for o in sh.outcome or []), "flow_runs": " ".join(sh.runs)}
        for sh in shares
    ]  # fmt: skip
    return outcomes, report


async def _deployment_exists(client: Any, name: str) -> None:
    from prefect.exceptions import ObjectNotFound

    try:
        await client.read_deployment_by_name(name)
    except ObjectNotFound:
        raise LookupError(
            f"no deployment {name} on the Prefect server, which AUTOTRADE_EVENING_FANOUT=deployment starts "
            "for each share of the buys (prefect deploy --all; AUTOTRADE_EVENING_FANOUT_DEPLOYMENT)"
        ) from None


async def _start(
    sh: Share, day: date, batch_id: int, caps: dict[str, int] | None, parent: str, total: int
) -> None:
    from prefect.deployments import run_deployment

    sh.attempt += 1
    again = f" (attempt {sh.attempt})" if sh.attempt > 1 else ""
    run = await run_deployment(  # type: ignore[misc]
        get_runtime().settings.evening_fanout_deployment,
        parameters={"trading_day": day.isoformat(), "batch_id": batch_id,
                    "accounts": [list(a) for a in sh.accounts], "limits": caps, "share": sh.lease},
        timeout=0, as_subflow=True, idempotency_key=f"{parent}:{sh.index}:{sh.attempt}",
        flow_run_name=f"buys {day} share {sh.index + 1} of {total}{again}",
    )  # fmt: skip
    sh.run_id = run.id
    sh.runs.append(str(run.id))
    sh.submitted = utcnow()


async def _check(
    client: Any, shares: list[Share], day: date, batch_id: int, caps: dict[str, int] | None, parent: str,
    ttl: timedelta, total: int,
) -> None:  # fmt: skip
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.states import Cancelled, Crashed

    runs: dict[Any, Any] = {}
    for part in chunks([sh.run_id for sh in shares], READ_AT_ONCE):
        found = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=part)))
        runs.update({r.id: r for r in found})
    leases = await get_runtime().db.run(_leases, [sh.lease for sh in shares])
    now = utcnow()
    start_within = timedelta(minutes=get_runtime().settings.evening_fanout_start_minutes)
    for sh in shares:
        run = runs.get(sh.run_id)
        if run is None or run.state is None:
            continue
        state = run.state
        if state.is_final():
            if state.is_cancelled():
                sh.ended = "Cancelled"
                sh.outcome = _failed(sh, "the share's run was cancelled")
                continue
            rows = await _outcome_of(client, run.id)
            if rows is not None:
                sh.ended, sh.outcome = state.name, rows
                continue
            why = f"{state.name} without an outcome: {(state.message or '')[:300]}"
        elif state.is_scheduled() and sh.submitted is not None and now - sh.submitted > start_within:
            minutes = start_within.total_seconds() / 60
            why = f"no worker of the pool started the share within {minutes:g} min ({state.name})"
            _logger().error("share %d of %d, run %s: %s; its accounts fail", sh.index + 1, total, run.id, why)
            with contextlib.suppress(Exception):  # cancelled: a worker that comes later does not start it
                await client.set_flow_run_state(run.id, Cancelled(message=f"share {why}"), force=True)
            sh.ended = "not started"
            sh.outcome = _failed(sh, f"ShareNotStarted ({why})")
            continue
        elif silent(state, leases.get(sh.lease), now, ttl):
            why = f"silent for {ttl.total_seconds():.0f} s ({state.name}): its process or machine stopped"
            with contextlib.suppress(Exception):  # the run list shows it as what it is
                await client.set_flow_run_state(run.id, Crashed(message=f"share {why}"), force=True)
        else:
            continue
        _logger().warning("share %d of %d, run %s: %s", sh.index + 1, total, run.id, why)
        if sh.attempt < get_runtime().settings.evening_fanout_attempts:
            await _start(sh, day, batch_id, caps, parent, total)
        else:
            sh.ended = f"failed after {sh.attempt} runs"
            sh.outcome = _failed(sh, f"ShareNotPlaced ({why})")


def _failed(sh: Share, error: str) -> list[dict[str, Any]]:
    return [{"user_id": u, "account_no": a, "error": error} for u, a in sh.accounts]


async def _outcome_of(client: Any, run_id: Any) -> list[dict[str, Any]] | None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    found = await client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), key=ArtifactFilterKey(any_=[SHARE_OUTCOME])
        )
    )
    if not found:
        return None
    data = found[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    return [dict(r) for r in rows]


def _logger() -> Any:
    from prefect import get_run_logger

    try:
        return get_run_logger()
    except Exception:
        return log
