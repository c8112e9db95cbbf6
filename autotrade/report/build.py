"""Daily reports from the database: one per user and one for the operator, each a Markdown summary, an HTML
file with the equity and drawdown charts, and the figures for the notification."""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa

from autotrade.domain.calendar import trading_days
from autotrade.domain.models import ExitReason, TradeAction
from autotrade.notify.format import signed_won, won
from autotrade.notify.messages import ReportSummary
from autotrade.report.charts import equity_charts
from autotrade.report.indicators import Indicator, indicators_markdown, operating_indicators
from autotrade.report.metrics import HoldingDays, Performance, Position, max_drawdown, performance, unrealized
from autotrade.report.monthly import review_markdown
from autotrade.store.db import Database
from autotrade.store.models import EquitySnapshot, ThreeTierStrategy, TradeRecordRow, User

OPERATOR_ID = "operator"


@dataclass(frozen=True, slots=True)
class Trade:
    user_id: str
    account_no: str
    code: str
    name: str
    action: str
    quantity: int
    price: int
    amount: int
    fee: int
    tax: int
    profit_loss: int | None
    exit_reason: str | None


@dataclass
class Report:
    user_id: str
    day: date
    trades: list[Trade]
    positions: list[Position]
    performance: Performance
    realized_today: int
    realized_total: int
    unrealized: int
    equity: list[tuple[date, int]]
    max_drawdown: float
    summary: ReportSummary
    html_path: Path
    markdown: str = ""
    charts: list[Path] = field(default_factory=list)

    @property
    def open_positions(self) -> list[Position]:
        return [p for p in self.positions if not p.is_closed]


@dataclass
class DailyReports:
    day: date
    users: list[Report]
    operator: Report
    out_dir: Path
    indicators: list[Indicator] = field(default_factory=list)  # the operating indicators of the day


def build_daily_reports(
    db: Database,
    day: date,
    out_dir: Path,
    prices: dict[str, int],
    users: Sequence[str] | None = None,
    reviews: Path | None = None,
) -> DailyReports:
    """Build and write the reports of ``day`` (files under ``out_dir``; re-running replaces them). With
    ``reviews`` (the monthly review flow's folder) the operator's report ends with the latest monthly review,
    or says there is none yet."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trades, positions, equity, known = _load(db, day, users)
    holding = HoldingDays(trading_days(day - timedelta(days=3650), day))
    indicators = operating_indicators(db, day)
    reports = [
        _report(uid, day, out_dir, trades[uid], positions[uid], equity[uid], prices, holding)
        for uid in sorted(known)
    ]
    extra = indicators_markdown(indicators)
    if reviews is not None:
        extra += "\n\n" + review_markdown(reviews, day)
    everyone = _report(
        OPERATOR_ID, day, out_dir, [t for u in sorted(known) for t in trades[u]],
        [p for u in sorted(known) for p in positions[u]], _sum_curves([equity[u] for u in known]), prices,
        holding, users_count=len(known), extra=extra,
    )  # fmt: skip
    return DailyReports(day, reports, everyone, out_dir, indicators)


def _load(
    db: Database, day: date, users: Sequence[str] | None
) -> tuple[dict[str, list[Trade]], dict[str, list[Position]], dict[str, list[tuple[date, int]]], set[str]]:
    trades: dict[str, list[Trade]] = defaultdict(list)
    positions: dict[str, list[Position]] = defaultdict(list)
    equity_by: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    with db.unit_of_work() as s:
        uq = sa.select(User.user_id)
        if users:
            uq = uq.where(User.user_id.in_(list(users)))
        known = set(s.scalars(uq).all())
        for r in s.scalars(
            sa.select(TradeRecordRow)
            .where(TradeRecordRow.trading_day == day, TradeRecordRow.user_id.in_(known))
            .order_by(TradeRecordRow.executed_at, TradeRecordRow.id)
        ):
            trades[r.user_id].append(
                Trade(r.user_id, r.account_no, r.code, r.name, r.action.value, r.quantity, r.price, r.amount,
                      r.fee, r.tax, r.profit_loss, r.exit_reason.value if r.exit_reason else None)
            )  # fmt: skip
        sells: dict[int, list[TradeRecordRow]] = defaultdict(list)
        for r in s.scalars(
            sa.select(TradeRecordRow).where(
                TradeRecordRow.strategy_id.is_not(None),
                TradeRecordRow.trading_day <= day,
                TradeRecordRow.action != TradeAction.BUY,
            )
        ):
            sells[r.strategy_id or 0].append(r)
        for st in s.scalars(
            sa.select(ThreeTierStrategy)
            .where(ThreeTierStrategy.user_id.in_(known), ThreeTierStrategy.entry_date <= day)
            .order_by(ThreeTierStrategy.id)
        ):
            own = sells.get(st.id, [])
            closed_on = max((r.trading_day for r in own), default=None) if st.held_quantity == 0 else None
            if st.held_quantity == 0 and closed_on is None and st.closed_at is not None:
                closed_on = st.closed_at.date()  # closed outside the product: no sell record
            positions[st.user_id].append(
                Position(
                    strategy_id=st.id, code=st.code, name=st.name, entry_date=st.entry_date,
                    entry_price=st.entry_price, quantity=st.quantity, held=st.held_quantity,
                    status=st.status.value, realized_pnl=sum(r.profit_loss or 0 for r in own),
                    stopped=any(r.exit_reason is ExitReason.STOP_LOSS for r in own), closed_on=closed_on,
                    tiers={o.order_type.value: o.status.value for o in st.orders},
                )
            )  # fmt: skip
        for snap in s.scalars(
            sa.select(EquitySnapshot).where(
                EquitySnapshot.user_id.in_(known), EquitySnapshot.trading_day <= day
            )
        ):
            equity_by[snap.user_id][snap.trading_day] += snap.equity
    equity = {u: sorted(equity_by[u].items()) for u in known}
    return trades, positions, defaultdict(list, equity), known


def _sum_curves(curves: Sequence[list[tuple[date, int]]]) -> list[tuple[date, int]]:
    total: dict[date, int] = defaultdict(int)
    for curve in curves:
        for d, v in curve:
            total[d] += v
    return sorted(total.items())


def _report(
    user_id: str,
    day: date,
    out_dir: Path,
    trades: list[Trade],
    positions: list[Position],
    equity: list[tuple[date, int]],
    prices: dict[str, int],
    holding: HoldingDays,
    users_count: int | None = None,
    extra: str = "",
) -> Report:
    perf = performance(positions, holding)
    realized_today = sum(t.profit_loss or 0 for t in trades)
    realized_total = sum(p.realized_pnl for p in positions)
    paper = sum(
        unrealized(p.held, p.entry_price, prices.get(p.code, p.entry_price)) for p in positions if p.held
    )
    values = [v for _, v in equity]
    summary = ReportSummary(
        trading_day=day, trades=len(trades), realized_pnl=realized_today, win_rate=perf.win_rate,
        stop_trigger_rate=perf.stop_trigger_rate, equity=values[-1] if values else None,
    )  # fmt: skip
    stem = f"report_{user_id}_{day:%Y%m%d}"
    report = Report(
        user_id, day, trades, positions, perf, realized_today, realized_total, paper, equity,
        max_drawdown(values), summary, out_dir / f"{stem}.html",
    )  # fmt: skip
    report.charts = equity_charts(equity, out_dir / stem)
    report.markdown = markdown(report, users_count) + (f"\n\n{extra}" if extra else "")
    report.html_path.write_text(_html(report), encoding="utf-8")
    return report


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}%"


def markdown(r: Report, users_count: int | None = None) -> str:
    who = f"{users_count} users" if users_count is not None else r.user_id
    p = r.performance
    lines = [
        f"# {r.day:%Y-%m-%d} daily report: {who}",
        "",
        f"- trades today: {len(r.trades)}; realized P&L today {signed_won(r.realized_today)}, "
        f"to date {signed_won(r.realized_total)}; unrealized {signed_won(r.unrealized)}",
        f"- closed positions {p.closed}: win rate {_rate(p.win_rate)}, stop-trigger rate "
        f"{_rate(p.stop_trigger_rate)}, average holding {p.average_holding_days or '-'} trading days",
        f"- equity {won(r.equity[-1][1]) if r.equity else '-'}; max drawdown {r.max_drawdown:.2f}%",
        "",
    ]
    if r.trades:
        lines += ["| user | stock | action | qty | price | amount | fee | tax | P&L |", "|" + "---|" * 9]
        lines += [
            f"| {t.user_id} | {t.name} ({t.code}) | {t.exit_reason or t.action} | {t.quantity:,} | "
            f"{t.price:,} | {t.amount:,} | {t.fee:,} | {t.tax:,} | "
            f"{'' if t.profit_loss is None else f'{t.profit_loss:+,}'} |"
            for t in r.trades
        ]
        lines.append("")
    if r.open_positions:
        lines += [
            "| open position | held | entry | stop | preserve | take-profit | status |",
            "|" + "---|" * 7,
        ]
        lines += [
            f"| {p.name} ({p.code}) | {p.held:,} | {p.entry_price:,} | {p.tiers.get('STOP_LOSS', '-')} | "
            f"{p.tiers.get('PRESERVE', '-')} | {p.tiers.get('TAKE_PROFIT', '-')} | {p.status} |"
            for p in r.open_positions
        ]
    return "\n".join(lines)


def _html(r: Report) -> str:
    import markdown_it

    body = markdown_it.MarkdownIt("commonmark", {"html": False}).enable("table").render(r.markdown)
    images = "".join(
        f'<p><img src="{html.escape(c.name)}" alt="{html.escape(c.stem)}" width="720"></p>' for c in r.charts
    )
    return (
        "<!doctype html><html lang='ko'><head><meta charset='utf-8'>"
        f"<title>{html.escape(r.user_id)} {r.day:%Y-%m-%d}</title>"
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "</style></head><body>"
        f"{body}{images}</body></html>"
    )
