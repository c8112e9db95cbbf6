"""One share of the evening's buys as a run of its own: the ``place-buys`` deployment, which the evening run
starts once per share when ``AUTOTRADE_EVENING_FANOUT=deployment`` (flows/fanout.py), so that any worker of
the work pool, on any machine, takes it."""

# No `from __future__ import annotations`: a served run gets the flow's function by value (cloudpickle), and
# Prefect validates its parameters with their types, not their names.

from datetime import date
from typing import Any

from prefect import flow

from flows.common import deliver_notices, failed_accounts, failure_message, placed_orders, table_artifact
from flows.fanout import SHARE_OUTCOME, holding_share, place_here, share_rows


@flow(name="place_buys")
async def place_buys(
    trading_day: date,
    batch_id: int,
    accounts: list[tuple[str, str]],
    limits: dict[str, int] | None = None,
    share: str | None = None,
) -> dict[str, Any]:
    """Place the buys of ``accounts`` (user, account number) from the day's validated scan ``batch_id``
    through the same tasks as the evening run's own (retrieve_broker_tokens -> check_risk -> place_orders:
    the vault gateway, each intent exactly once), tell their users, and record one row per account as the
    ``buy-share-outcome`` artifact, which the evening run reads. ``share`` names the lease the run holds
    while it works (the evening run re-runs a share whose lease expires). Running it again places nothing
    twice. Ends Failed when accounts still failed after the retries (their rows say why)."""
    async with holding_share(share):
        outcomes = await place_here(batch_id, accounts, trading_day, False, limits, notify=True)
        from prefect.artifacts import acreate_table_artifact

        rows = share_rows(outcomes)
        await acreate_table_artifact(key=SHARE_OUTCOME, table=rows or [{"result": "no accounts"}],
                                     description=f"buys {trading_day}: {len(rows)} accounts")  # fmt: skip
    placed = placed_orders(outcomes)
    await table_artifact("orders-placed", placed, "no orders", f"buy orders {trading_day}")
    failed = failed_accounts(outcomes)
    summary: dict[str, Any] = {
        "trading_day": trading_day.isoformat(),
        "accounts": len(outcomes),
        "orders": len(placed),
        "invested": sum(x["quantity"] * x["price"] for x in placed),
        "accounts_with_errors": len(failed),
        "per_account": [
            {"user": o["user_id"], "account": o["account_no"], "sent": len(o.get("placed") or []),
             "failed": len(o.get("failed") or []) + (1 if o.get("error") else 0)}
            for o in outcomes
        ],
    }  # fmt: skip
    if failed:
        from prefect.states import Failed

        what = "no buys placed" if not placed else f"{len(placed)} orders placed for the others"
        return Failed(message=failure_message(what, failed, len(outcomes)), data=summary)  # type: ignore[return-value]
    await deliver_notices()
    return summary
