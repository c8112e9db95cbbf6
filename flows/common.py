"""What every flow shares: the trading day, the non-trading-day guard and the operator's failure hook."""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from autotrade.domain.calendar import is_trading_day
from autotrade.domain.krx import KST
from autotrade.runtime import get_runtime, start_worker_process
from tasks.notifications import deliver_notices, flush_notices  # noqa: F401 - deliver_notices: the flows import it here

log = logging.getLogger(__name__)


def resolve_day(trading_day: date | None) -> date:
    """The given day, or today in Seoul by the runtime's clock (the simulator's in the demo)."""
    if trading_day is not None:
        return trading_day
    return get_runtime().clock().astimezone(KST).date()


def skip_if_closed(day: date) -> dict[str, Any] | None:
    """A result for a non-trading day (the flow then returns cleanly), or None on a trading day."""
    if is_trading_day(day):
        return None
    return {"trading_day": day.isoformat(), "skipped": "not a KRX trading day"}


def notify_operator(flow: Any, flow_run: Any, state: Any) -> None:
    """Failure and crash hook: tell the operator which flow failed and why (no secrets in the text)."""
    from autotrade.notify import error_occurred
    from autotrade.notify.format import scrub_secrets

    message = getattr(state, "message", None) or str(getattr(state, "name", "failed"))
    try:  # the notice in the run's own Prefect log, too (not only the worker's stdout)
        from prefect.logging.loggers import flow_run_logger

        flow_run_logger(flow_run, flow).error(
            "operator notified: %s failed: %s", getattr(flow, "name", "?"), scrub_secrets(message)[:2000]
        )
    except Exception as exc:
        log.error("could not log the failure notice: %s", type(exc).__name__)
    try:
        rt = get_runtime()
        rt.notify(error_occurred(flow.name, getattr(flow_run, "name", "?"), message, datetime.now(KST)))
        flush_notices(rt.notifier)  # the run is over: its notices (this one too) go out before it ends
    except Exception as exc:  # the hook must never raise
        log.error(
            "could not notify the operator about %s: %s", getattr(flow, "name", "?"), type(exc).__name__
        )


async def wait_until(moment: datetime) -> None:
    """Wait until ``moment`` on the runtime's clock (the simulator's virtual clock in the demo)."""
    await get_runtime().time.wait_until(moment)


def placed_orders(outcomes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The buy orders the accounts' outcomes placed, a row each (the ``orders-placed`` artifact's)."""
    return [
        {"user": o["user_id"], "account": o["account_no"], "code": c, "quantity": q, "price": p}
        for o in outcomes
        for c, q, p in o.get("placed", [])
    ]


def failed_accounts(outcomes: Sequence[dict[str, Any]]) -> list[str]:
    """One line per account that still failed after the retries: ``user/account: reason``."""
    lines = []
    for o in outcomes:
        reasons = [str(o["error"])] if o.get("error") else []
        reasons += [f"{code} {err}" for code, err in o.get("failed") or []]
        if reasons:
            lines.append(f"{o.get('user_id', '?')}/{o.get('account_no', '?')}: {', '.join(reasons)}")
    return lines


FIRST_REASONS = 5


def failure_message(what: str, failed: Sequence[str], accounts: int) -> str:
    """The state message of a run whose accounts failed: counts and the first reasons."""
    first = "; ".join(failed[:FIRST_REASONS])
    more = f" (and {len(failed) - FIRST_REASONS} more)" if len(failed) > FIRST_REASONS else ""
    return f"{len(failed)} of {accounts} accounts failed after retries ({what}): {first}{more}"


async def summary_artifact(key: str, title: str, summary: dict[str, Any], failed: Sequence[str]) -> None:
    """The run's summary as a markdown artifact: its counts, then the accounts that failed and why."""
    from prefect.artifacts import acreate_markdown_artifact

    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items())
    text = f"# {title}\n\n| | |\n|---|---|\n{rows}\n"
    if failed:
        listed = "\n".join(f"- {line}" for line in failed[:ARTIFACT_ROWS])
        text += f"\n## {len(failed)} accounts failed after retries\n\n{listed}\n"
    await acreate_markdown_artifact(key=key, markdown=text, description=title)


ARTIFACT_ROWS = 1_000  # a table artifact is one event on the Prefect server; 100,000 rows would not fit


async def table_artifact(key: str, rows: list[dict[str, Any]], empty: str, description: str) -> None:
    """A table artifact of at most ``ARTIFACT_ROWS`` rows; a longer table says how many rows it leaves out
    (they are all in the database and in the day's report)."""
    from prefect.artifacts import acreate_table_artifact

    table = rows[:ARTIFACT_ROWS] or [{"result": empty}]
    if len(rows) > ARTIFACT_ROWS:
        left_out = len(rows) - ARTIFACT_ROWS
        note = f"... and {left_out:,} more rows (in the database and the report)"
        table = [*table, {next(iter(rows[0])): note}]
        description = f"{description} (first {ARTIFACT_ROWS:,} of {len(rows):,})"
    await acreate_table_artifact(key=key, table=table, description=description)


async def in_worker_processes(task: Any, parameter_sets: Sequence[dict[str, Any]]) -> list[Any]:
    """Run ``task`` once per parameter set, each in a worker process of the settings' ``worker_processes``
    (Prefect's process pool: the task runs, retries and logs of each show under this flow run). A worker
    builds its runtime from this process's settings and clock. The results come back in order; a task that
    failed for good raises here, as it would when awaited in this process."""
    from prefect.task_runners import ProcessPoolTaskRunner

    rt = get_runtime()
    try:
        pickle.dumps(rt.clock)
    except Exception:
        raise TypeError(
            f"worker processes cannot share this runtime's clock ({rt.clock!r}); use a module-level function "
            "or autotrade.runtime.ShiftedClock, or AUTOTRADE_WORKER_PROCESSES=1"
        ) from None
    setting = rt.settings.worker_processes  # "auto": the caller planned one parameter set per process
    runner = ProcessPoolTaskRunner(
        max_workers=len(parameter_sets) if setting == "auto" else min(setting, len(parameter_sets)),
        initializer=start_worker_process,
        initargs=(rt.settings, rt.clock),
    )
    with runner:
        futures = [runner.submit(task, dict(params)) for params in parameter_sets]
        return [await asyncio.to_thread(f.result) for f in futures]
