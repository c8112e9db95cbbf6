"""Daily performance reports: per user and for the operator, as Prefect artifacts, HTML files with charts,
and the figures of the short notification; the incident report of an account; the operating indicators.

The package's names are loaded on first use (PEP 562): ``autotrade.report.incident`` must not pay for
matplotlib and the exchange calendar that the daily report needs (the incident CLI's 5-second budget)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotrade.report.build import DailyReports, Report, build_daily_reports, markdown


def publish_artifacts(reports: DailyReports) -> int:
    """The operator's report as a Markdown artifact and the day's trades as a table artifact; one Markdown
    artifact per user. Outside a flow run Prefect only logs that there is nowhere to attach them."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    day = f"{reports.day:%Y%m%d}"
    create_markdown_artifact(
        key=f"daily-report-{day}", markdown=reports.operator.markdown, description="operator daily report"
    )
    table = [
        {"user": t.user_id, "stock": t.code, "action": t.exit_reason or t.action, "qty": t.quantity,
         "price": t.price, "pnl": t.profit_loss}
        for t in reports.operator.trades
    ]  # fmt: skip
    create_table_artifact(key=f"trades-{day}", table=table or [{"result": "no trades"}], description="trades")
    for r in reports.users:
        create_markdown_artifact(
            key=f"report-{_slug(r.user_id)}-{day}",
            markdown=r.markdown,
            description=f"{r.user_id} daily report",
        )
    return 2 + len(reports.users)


def _slug(value: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in value.lower())[:40]


def __getattr__(name: str) -> Any:
    if name in ("DailyReports", "Report", "build_daily_reports", "markdown"):
        from autotrade.report import build

        return getattr(build, name)
    raise AttributeError(f"module 'autotrade.report' has no attribute {name!r}")


__all__ = ["DailyReports", "Report", "build_daily_reports", "markdown", "publish_artifacts"]
