"""On the 1st: the previous month's backtest on the scans received, compared with live trading trade by trade
(autotrade/backtest/review.py), over the daily bars the product recorded after each close (the database's
``daily_bars``) or, when one is given or set, a bars file. Published as a Markdown artifact, written beside
the daily reports (Markdown and JSON; the operator's daily report shows the latest) and told to the operator.
A month without scans, or without bars, is skipped cleanly."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, task

from autotrade.domain.krx import KST
from autotrade.runtime import get_runtime
from flows.common import deliver_notices, notify_operator

if TYPE_CHECKING:
    from autotrade.backtest.review import Review
    from autotrade.notify.model import Notification


def previous_month() -> str:
    """The month before today's (Seoul, by the runtime's clock): what a run on the 1st reviews."""
    today = get_runtime().clock().astimezone(KST).date()
    return f"{today.replace(day=1) - timedelta(days=1):%Y-%m}"


@task(name="review_month", persist_result=False)
def review_month(month: str, bars: str | None) -> dict[str, Any]:
    """Backtest the month and compare it with the ledger; write the review's files; tell the operator."""
    from autotrade.backtest.review import Review, bars_location, month_span, monthly_review, write_review
    from autotrade.report.monthly import reviews_dir

    rt = get_runtime()
    where = Path(bars).expanduser() if bars else bars_location(rt.settings)  # None: the database's bars
    if where is not None and not where.exists():
        label, first, last = month_span(month)
        review = Review(month=label, first_day=first, last_day=last, bars_source=str(where), scan_days=0,
                        skipped=f"no bars at {where} (set AUTOTRADE_REVIEW_BARS_LOCATION)")  # fmt: skip
    else:
        review = monthly_review(rt.db, month, where, rt.settings)
    out: dict[str, Any] = {"month": review.month, "markdown": review.markdown(),
                           "bars_source": review.bars_source,
                           "missing_bars": len(review.missing_bars)}  # fmt: skip
    if review.skipped:
        return {**out, "skipped": review.skipped}
    md, js = write_review(review, reviews_dir(rt.settings.data_dir))  # the operator's daily report reads it
    rt.notify(review_notice(review, str(md), rt.clock()))
    counts: dict[str, int] = {}
    for _, f in review.differences:
        counts[f.reason.value] = counts.get(f.reason.value, 0) + 1
    return {**out, "accounts": len(review.accounts), "differences": len(review.differences),
            "reasons": counts, "markdown_path": str(md), "json_path": str(js)}  # fmt: skip


def review_notice(review: Review, link: str, at: datetime) -> Notification:
    """The operator's notice of a written review: accounts, trades and differences by reason."""
    from autotrade.notify import OPERATOR
    from autotrade.notify.model import Fact, Notification, NotificationKind

    trades = sum(len(a.trades) for a in review.accounts)
    diffs = review.differences
    by_reason: dict[str, int] = {}
    for _, f in diffs:
        by_reason[f.reason.value] = by_reason.get(f.reason.value, 0) + 1
    return Notification(
        kind=NotificationKind.REPORT_READY, audience=OPERATOR, title=f"{review.month} 월간 리뷰",
        lines=(f"계좌 {len(review.accounts):,}개, 거래 {trades:,}건 비교, 차이 {len(diffs):,}건",),
        facts=tuple(Fact(label=k, value=f"{v:,}") for k, v in sorted(by_reason.items())),
        occurred_at=at, link=link,
        template_params={"month": review.month, "trades": f"{trades:,}", "differences": f"{len(diffs):,}",
                         "link": link},
    )  # fmt: skip


@flow(name="monthly_review", on_failure=[notify_operator], on_crashed=[notify_operator])
async def monthly_review_flow(month: str | None = None, bars: str | None = None) -> dict[str, Any]:
    """Review ``month`` (``YYYY-MM``; default the previous month) over the bars at ``bars`` (default the
    ``review_bars_location`` setting; when that is not set either, the bars recorded in the database)."""
    from prefect.artifacts import acreate_markdown_artifact

    result = review_month(month or previous_month(), bars)
    await acreate_markdown_artifact(
        key="monthly-review", markdown=result.pop("markdown"), description=f"monthly review {result['month']}"
    )
    await deliver_notices()
    return result
