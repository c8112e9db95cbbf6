"""End-of-day tasks: equity snapshots from the broker, then the reports."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import sqlalchemy as sa
from prefect import task

from autotrade.runtime import READ, get_runtime
from autotrade.store.models import EquitySnapshot, TradeRecordRow
from autotrade.trading.buys import AccountRef
from tasks.common import RETRY
from tasks.trading import for_each_account

log = logging.getLogger(__name__)


@task(name="snapshot_equity", **RETRY)
async def snapshot_equity(accounts: list[tuple[str, str]], day: date) -> dict[str, int]:
    """Record each account's end-of-day cash, holdings value and equity (idempotent per day)."""
    rt = get_runtime()
    prices: dict[str, int] = {}

    async def work(ref: AccountRef) -> None:
        broker = await rt.brokers.for_account(ref, READ)
        view = await broker.account()
        value = 0
        for h in view.holdings:
            if h.quantity <= 0:
                continue
            px = prices.get(h.code) or await broker.last_price(h.code)
            prices[h.code] = px
            value += px * h.quantity
        with rt.db.unit_of_work() as s:
            realized = s.scalar(
                sa.select(sa.func.coalesce(sa.func.sum(TradeRecordRow.profit_loss), 0)).where(
                    TradeRecordRow.account_no == ref.account_no, TradeRecordRow.trading_day == day
                )
            )
            snap = s.scalar(
                sa.select(EquitySnapshot).where(
                    EquitySnapshot.account_no == ref.account_no, EquitySnapshot.trading_day == day
                )
            )
            if snap is None:
                snap = EquitySnapshot(user_id=ref.user_id, account_no=ref.account_no, trading_day=day,
                                      cash=0, holdings_value=0, equity=0)  # fmt: skip
                s.add(snap)
            snap.cash, snap.holdings_value, snap.equity = view.cash, value, view.cash + value
            snap.realized_pnl = int(realized or 0)

    await for_each_account(accounts, work, retry_transient=True)
    return prices


@task(name="record_daily_bars", persist_result=False)
async def record_daily_bars(day: date) -> dict[str, Any]:
    """After the close: the day's bar of every code the product cared about (the day's scans, the strategies
    open or closed today) from the broker's quote with the operator's market-data key, upserted into
    ``daily_bars`` for the monthly review. Only on the day itself after its close (a quote is today's); a
    code whose quote fails is logged and counted, never failing the report."""
    from autotrade.broker.errors import BrokerError
    from autotrade.domain.calendar import hours_of
    from autotrade.domain.krx import KST
    from autotrade.store.daily_bars import codes_of_day, record_bars

    rt = get_runtime()
    now = rt.clock().astimezone(KST)
    if now.date() != day or now.time() < hours_of(day).close:
        when = "before the close" if now.date() == day else f"on {now.date().isoformat()}"
        return {"trading_day": day.isoformat(), "skipped": f"the quotes are of now ({when}), not of {day}"}
    codes = codes_of_day(rt.db, day)
    if not codes:
        return {"trading_day": day.isoformat(), "codes": 0, "recorded": 0, "no_trade": [], "failed": 0,
                "failed_codes": []}  # fmt: skip
    try:
        source = await rt.brokers.price_feed()
    except (LookupError, BrokerError, OSError) as exc:  # no market-data key, the broker unreachable
        log.warning("daily bars of %s not recorded: %s", day, exc)
        return {"trading_day": day.isoformat(), "codes": len(codes), "recorded": 0,
                "skipped": f"no quote source: {type(exc).__name__}: {exc}"}  # fmt: skip
    try:
        recorded = await record_bars(rt.db, source, day, codes)
    finally:
        await source.aclose()
    return recorded.as_dict()


@task(name="build_reports", persist_result=False)
def build_reports(day: date, prices: dict[str, int], users: list[str] | None = None) -> dict[str, Any]:
    """Per-user and operator reports: artifacts, HTML files with charts, and a notice to each user; the
    operator's ends with the latest monthly review."""
    from autotrade.notify import OPERATOR, Audience, report_ready
    from autotrade.report import build_daily_reports, publish_artifacts
    from autotrade.report.monthly import reviews_dir

    rt = get_runtime()
    out_dir = rt.settings.data_dir / "reports" / day.isoformat()
    reviews = reviews_dir(rt.settings.data_dir)  # the monthly review flow's files
    reports = build_daily_reports(rt.db, day, out_dir, prices, users, reviews=reviews)
    publish_artifacts(reports)
    rt.preload_routes(r.user_id for r in reports.users)
    for user_report in reports.users:  # waited into the notifier's queue when run from a thread
        rt.notify(report_ready(Audience.user(user_report.user_id), user_report.summary,
                               str(user_report.html_path), rt.clock()), wait=True)  # fmt: skip
    rt.notify(report_ready(OPERATOR, reports.operator.summary, str(reports.operator.html_path), rt.clock()))
    return {"users": len(reports.users), "out_dir": str(out_dir)}
