"""15:40 KST: validate the scan, build per-user signals, check risk, send buys; 16:00: collect fills."""

# No `from __future__ import annotations`: a served run (flow.serve, deployments/serve.py) gets the flow's
# function by value (cloudpickle), and Prefect validates its parameters with their types, not their names.

import asyncio
from datetime import date, datetime
from typing import Any

from prefect import flow

from autotrade.domain.calendar import hours_of
from autotrade.domain.krx import KST
from autotrade.runtime import get_runtime, many_accounts_at_once
from autotrade.trading.scan import warm_up_in_background
from flows.common import (
    deliver_notices,
    failed_accounts,
    failure_message,
    notify_operator,
    placed_orders,
    resolve_day,
    skip_if_closed,
    summary_artifact,
    table_artifact,
    wait_until,
)
from flows.fanout import fan_out, place_here
from tasks.notifications import notify_fills
from tasks.trading import chunks, confirm_fills, list_accounts, validate_scan_task

warm_up_in_background()  # a worker loads the scan validator when it imports this flow, long before 15:40


@flow(name="evening_signal_and_buy", on_failure=[notify_operator], on_crashed=[notify_operator])
async def evening_signal_and_buy(
    trading_day: date | None = None,
    users: list[str] | None = None,
    dry_run: bool = False,
    scan: str | None = None,
    scan_payload: dict[str, Any] | None = None,
    collect_fills: bool = True,
    limits: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Turn the day's scan into buy orders on every enabled account; re-running the same day places nothing
    twice. With ``collect_fills`` the flow waits for the after-hours session to end and records the fills.
    ``limits`` (max_daily_investment, max_stock_count, max_per_stock) can only tighten the settings. A dry
    run sends nothing; its summary's ``planned`` lists the orders it would send (user, account, code,
    quantity, price).

    Accounts that still fail after the retries make the run end **Failed** (after every other account has
    bought and its fills are in), its message the counts and the first reasons; the failure hook tells the
    operator the same, and the ``evening-summary`` artifact lists every such account. Failed rather than a
    green run with a note: a user whose buys were not placed is a day lost that the operator must look at
    today, the run list is where an operator looks, and a retry is safe (nothing is placed twice)."""
    day = resolve_day(trading_day)
    skipped = skip_if_closed(day)
    if skipped:
        return skipped
    rt = get_runtime()
    if limits:
        from autotrade.trading.buys import CAPPABLE

        unknown = set(limits) - set(CAPPABLE)
        if unknown or any(int(v) <= 0 for v in limits.values()):
            raise ValueError(f"limits: only positive {', '.join(CAPPABLE)}; got {sorted(limits)}")
    batch_id = await validate_scan_task(day, scan, scan_payload)
    accounts = list_accounts(users)
    fanned_out = rt.settings.evening_fanout == "deployment" and not dry_run
    # The buys and what is told of them: every account's objects at once (see many_accounts_at_once).
    with many_accounts_at_once():
        if fanned_out:  # child runs of the place-buys deployment, one per share, any worker (flows/fanout.py)
            outcomes, shares = await fan_out(batch_id, accounts, day, limits)
            await table_artifact("buy-shares", shares, "no shares", f"buy shares {day}")
        else:  # each process tells its own share's users, as a child run does
            outcomes = await place_here(batch_id, accounts, day, dry_run, limits, notify=not dry_run)
        placed = placed_orders(outcomes)
        what = f"buy orders {day}{' (dry run)' if dry_run else ''}"
        await table_artifact("orders-placed", placed, "no orders", what)
        failed = failed_accounts(outcomes)
    summary: dict[str, Any] = {
        "trading_day": day.isoformat(),
        "accounts": len(accounts),
        "orders": len(placed),
        "invested": sum(o["quantity"] * o["price"] for o in placed),
        "accounts_with_errors": len(failed),
        "dry_run": dry_run,
    }
    if collect_fills and not dry_run:
        await wait_until(datetime.combine(day, hours_of(day).after_hours_close_end, tzinfo=KST))
        done = await asyncio.gather(
            *(confirm_fills(c, day) for c in chunks(accounts, rt.settings.batch_size))
        )
        fills = [r for b in done for r in b]
        await asyncio.to_thread(notify_fills, fills, day)  # off the loop: it may wait for the queue
        summary["positions_armed"] = sum(len((r.get("sync") or {}).get("armed", [])) for r in fills)
        fill_failures = failed_accounts(fills)
        summary["fills_with_errors"] = len(fill_failures)
        failed += [f"{line} (fills)" for line in fill_failures]
    await summary_artifact("evening-summary", f"evening run {day}", summary, failed)
    if dry_run:  # the operator reviews a dry run's orders per account before the real run
        summary["planned"] = placed
    if failed:
        from prefect.states import Failed

        what = "no buys placed" if not placed else f"{len(placed)} orders placed for the others"
        return Failed(message=failure_message(what, failed, len(accounts)), data=summary)  # type: ignore[return-value]
    await deliver_notices()
    return summary
