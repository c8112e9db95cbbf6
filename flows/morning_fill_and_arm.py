"""09:05 KST: confirm fills and open positions; 09:10: arm (persist) the exits; 09:15: tell the users."""

# No `from __future__ import annotations`: a served run (flow.serve, deployments/serve.py) gets the flow's
# function by value (cloudpickle), and Prefect validates its parameters with their types, not their names.

import asyncio
from datetime import date
from typing import Any

from prefect import flow

from autotrade.domain.calendar import previous_trading_day
from autotrade.runtime import get_runtime
from flows.common import deliver_notices, notify_operator, resolve_day, skip_if_closed, table_artifact
from tasks.notifications import notify_exits_armed
from tasks.trading import arm_exits, chunks, confirm_fills, list_accounts


@flow(name="morning_fill_and_arm", on_failure=[notify_operator], on_crashed=[notify_operator])
async def morning_fill_and_arm(
    trading_day: date | None = None, users: list[str] | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Confirm last evening's fills, reconcile holdings, and make sure every position has its exit armed.

    Positions whose buy filled in the after-hours session were armed at 16:00 and are watched from the
    opening bell; this run confirms and persists that, and catches anything the evening run missed.
    """
    day = resolve_day(trading_day)
    skipped = skip_if_closed(day)
    if skipped:
        return skipped
    rt = get_runtime()
    accounts = list_accounts(users, trading_only=False)
    previous = previous_trading_day(day)
    if not dry_run:
        size = rt.settings.batch_size
        await asyncio.gather(*(confirm_fills(c, previous) for c in chunks(accounts, size)))
    exits = arm_exits(users)
    armed = exits["armed"]
    await table_artifact("exits-armed", exits["table"], "no open positions", f"three-tier exits armed {day}")
    told = 0 if dry_run else await asyncio.to_thread(notify_exits_armed, users, day)  # it may wait
    await deliver_notices()
    return {"trading_day": day.isoformat(), "accounts": len(accounts), "armed": armed, "users_notified": told}
