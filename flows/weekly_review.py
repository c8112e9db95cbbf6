"""Saturday morning: the week's performance per user and for the operator from the ledger (trades, P&L after
costs, win rate, tier mix; autotrade/report/weekly.py), as a Markdown artifact and files beside the daily
reports. A week without trades is skipped cleanly."""

# No `from __future__ import annotations`: a served run (flow.serve, deployments/serve.py) gets the flow's
# function by value (cloudpickle), and Prefect validates its parameters with their types, not their names.

from datetime import date, timedelta
from typing import Any

from prefect import flow, task

from autotrade.domain.krx import KST
from autotrade.runtime import get_runtime
from flows.common import notify_operator


@task(name="review_week", persist_result=False)
def review_week(day: date, users: list[str] | None) -> dict[str, Any]:
    """The week's figures; written as Markdown and JSON under the reports folder."""
    from autotrade.report.weekly import weekly_review

    rt = get_runtime()
    review = weekly_review(rt.db, day, users)
    out: dict[str, Any] = {"week": review.first_day.isoformat(), "markdown": review.markdown()}
    if review.empty:
        return {**out, "skipped": "no trades this week"}
    folder = rt.settings.data_dir / "reports" / "weekly"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"review-{review.first_day}.md").write_text(out["markdown"], encoding="utf-8")
    (folder / f"review-{review.first_day}.json").write_text(review.to_json(), encoding="utf-8")
    o = review.operator
    return {**out, "users": len(review.users), "trades": o.trades, "realized_pnl": o.realized_pnl,
            "win_rate": o.win_rate, "tier_mix": o.tier_mix}  # fmt: skip


@flow(name="weekly_review", on_failure=[notify_operator], on_crashed=[notify_operator])
async def weekly_review_flow(week_of: date | None = None, users: list[str] | None = None) -> dict[str, Any]:
    """Review the week holding ``week_of`` (default: yesterday in Seoul, so a Saturday run covers Mon-Fri)."""
    from prefect.artifacts import acreate_markdown_artifact

    day = week_of or get_runtime().clock().astimezone(KST).date() - timedelta(days=1)
    result = review_week(day, users)
    await acreate_markdown_artifact(
        key="weekly-review", markdown=result.pop("markdown"), description=f"weekly review {result['week']}"
    )
    return result
