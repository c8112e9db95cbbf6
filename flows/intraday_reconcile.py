"""09:00-15:30 KST: watch prices (exits fire on trigger) and reconcile with the broker every few minutes."""

# No `from __future__ import annotations`: a served run (flow.serve, deployments/serve.py) gets the flow's
# function by value (cloudpickle), and Prefect validates its parameters with their types, not their names.

from datetime import date, datetime
from typing import Any

from prefect import flow

from flows.common import deliver_notices, notify_operator, resolve_day, skip_if_closed
from tasks.exits import watch_prices


@flow(name="intraday_reconcile", on_failure=[notify_operator], on_crashed=[notify_operator])
async def intraday_reconcile(
    trading_day: date | None = None,
    users: list[str] | None = None,
    dry_run: bool = False,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Watch every armed position until ``until`` (default: the close). Safe to restart mid-day: the exit
    book is rebuilt from the database and unsent or unknown sells are reconciled before anything is resent.
    ``dry_run`` only loads and reports the watch list."""
    day = resolve_day(trading_day)
    skipped = skip_if_closed(day)
    if skipped:
        return skipped
    if dry_run:
        from autotrade.runtime import get_runtime

        n = get_runtime().engine.load(users)
        return {"trading_day": day.isoformat(), "watched": n, "dry_run": True}
    result = await watch_prices(day, users, until)
    await deliver_notices()
    return {"trading_day": day.isoformat(), **result}
