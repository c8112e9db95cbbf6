"""After the close: snapshot every account's equity, then per-user and operator reports, and the
specification's operating indicators (a missed one alerts the operator)."""

# No `from __future__ import annotations`: a served run (flow.serve, deployments/serve.py) gets the flow's
# function by value (cloudpickle), and Prefect validates its parameters with their types, not their names.

import asyncio
from datetime import date
from typing import Any

from prefect import flow, task

from autotrade.runtime import get_runtime
from flows.common import deliver_notices, notify_operator, resolve_day, skip_if_closed
from tasks.reports import build_reports, record_daily_bars, snapshot_equity
from tasks.trading import chunks, list_accounts


@task(name="check_operating_indicators", persist_result=False)
def check_operating_indicators(day: date) -> dict[str, Any]:
    """The day's operating indicators (autotrade/report/indicators.py); the operator is told of any missed."""
    from autotrade.notify.messages import indicators_missed
    from autotrade.report.indicators import missed, operating_indicators

    rt = get_runtime()
    indicators = operating_indicators(rt.db, day)
    short = missed(indicators)
    if short:
        rt.notify(indicators_missed(day, [(i.name, i.shown(), i.basis) for i in short], rt.clock()))
    return {"indicators": {i.name: i.value for i in indicators}, "indicators_missed": [i.name for i in short]}


@flow(name="daily_report", on_failure=[notify_operator], on_crashed=[notify_operator])
async def daily_report(
    trading_day: date | None = None, users: list[str] | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Reports of ``trading_day``: trades, realized and unrealized P&L, open strategies, win and stop rates,
    equity and drawdown charts, the operating indicators. Re-running replaces the day's snapshot and files."""
    day = resolve_day(trading_day)
    skipped = skip_if_closed(day)
    if skipped:
        return skipped
    accounts = list_accounts(users, trading_only=False)
    prices: dict[str, int] = {}
    bars: dict[str, Any] = {"skipped": "dry run"}
    if not dry_run:
        for chunk in chunks(accounts, get_runtime().settings.batch_size):
            prices.update(await snapshot_equity(chunk, day))
        bars = await record_daily_bars(day)  # the monthly review's prices (daily_bars)
    result = await asyncio.to_thread(build_reports, day, prices, users)  # its notices may wait for the queue
    checked = check_operating_indicators(day)
    await deliver_notices()
    return {"trading_day": day.isoformat(), "accounts": len(accounts), **result, **checked,
            "daily_bars": bars}  # fmt: skip
