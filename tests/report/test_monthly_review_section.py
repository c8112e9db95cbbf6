"""The operator's daily report ends with the latest monthly review, read from the files the monthly review
flow writes (write_review into reports/monthly of the home): every trade live vs backtest with each difference
and its reason; "no review yet" before the first review; users' reports never show it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from autotrade.backtest.review import (
    AccountReview,
    Aspect,
    Fill,
    Finding,
    Review,
    TradeComparison,
    Why,
    write_review,
)
from autotrade.report import build_daily_reports
from autotrade.report.monthly import reviews_dir
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.repositories import Users

PRICE_DETAIL = "live 10,630 at its tick, the backtest the level 10,400"
DAY = date(2026, 12, 1)  # the daily report of the 1st: the November review ran that morning


def _review(month: str, first: date, last: date, effect_day: int) -> Review:
    buy = Fill(date(2026, 11, 2), 100, 1_000_000, 150, 0, buy=True)
    live_preserve = Fill(date(2026, 11, effect_day), 50, 531_500, 79, 1_063, buy=False)
    bt_preserve = Fill(date(2026, 11, effect_day), 50, 520_000, 78, 1_040, buy=False)
    bt_stop = Fill(date(2026, 11, 4), 50, 475_000, 71, 950, buy=False)
    trades = (
        TradeComparison("kim", "5001000011", "100010", "가전", date(2026, 11, 2), "BUY", buy, buy, ()),
        TradeComparison(
            "kim", "5001000011", "100010", "가전", date(2026, 11, 2), "PRESERVE", live_preserve, bt_preserve,
            (Finding(Aspect.PRICE, Why.FILL_PRICE, PRICE_DETAIL),),
        ),
        TradeComparison(
            "kim", "5001000011", "100010", "가전", date(2026, 11, 2), "STOP_LOSS", None, bt_stop,
            (Finding(Aspect.ONLY_BACKTEST, Why.MISSED_EXIT, "the bar's low 9,380 reached the stop 9,500"),),
        ),
    )  # fmt: skip
    account = AccountReview("kim", "5001000011", 10_000_000, 50_000_000, "cash on 2026-10-30", trades,
                            live_realized=30_283, backtest_realized=-7_339)  # fmt: skip
    return Review(month, first, last, "/data/bars", scan_days=2, accounts=(account,))


def _operator_html(db: Database, out: Path, reviews: Path) -> tuple[str, list[str]]:
    reports = build_daily_reports(db, DAY, out, prices={}, reviews=reviews)
    users = [r.html_path.read_text(encoding="utf-8") for r in reports.users]
    return reports.operator.html_path.read_text(encoding="utf-8"), users


def test_the_operator_report_shows_the_latest_monthly_review(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    db = Database(url)
    with db.unit_of_work() as s:
        Users(s).ensure("kim")
    reviews = reviews_dir(tmp_path)  # where flows/monthly_review.py writes under the home

    before, users = _operator_html(db, tmp_path / "before", reviews)
    assert "No monthly review yet" in before and "<td>FILL_PRICE</td>" not in before
    assert all("onthly review" not in u for u in users)

    write_review(_review("2026-10", date(2026, 10, 1), date(2026, 10, 31), 3), reviews)  # an older one
    write_review(_review("2026-11", date(2026, 11, 1), date(2026, 11, 30), 5), reviews)
    write_review(_review("2027-01", date(2027, 1, 1), date(2027, 1, 31), 6), reviews)  # after the day
    after, users = _operator_html(db, tmp_path / "after", reviews)
    assert "Monthly review 2026-11" in after and "2026-10" not in after and "2027-01" not in after
    assert "No monthly review yet" not in after
    assert "review-2026-11.md" in after and "/data/bars" in after
    assert "3 trades compared, 1 the same, 2 differences" in after
    assert "live +30,283 KRW, backtest -7,339 KRW (+37,622)" in after
    rows = [
        # stock, bought, trade, live, backtest, effect = live net - backtest net, what differs, reason
        "<td>100010 가전</td><td>11-02</td><td>BUY</td><td>11-02 100 @ 10,000</td><td>11-02 100 @ 10,000</td>"
        "<td>+0</td><td>same</td><td>-</td>",
        "<td>100010 가전</td><td>11-02</td><td>PRESERVE</td><td>11-05 50 @ 10,630</td>"
        "<td>11-05 50 @ 10,400</td>"
        "<td>+11,476</td><td>PRICE: live 10,630 at its tick, the backtest the level 10,400</td>"
        "<td>FILL_PRICE</td>",
        "<td>100010 가전</td><td>11-02</td><td>STOP_LOSS</td><td>-</td><td>11-04 50 @ 9,500</td>"
        "<td>-473,979</td><td>ONLY_BACKTEST: the bar's low 9,380 reached the stop 9,500</td>"
        "<td>MISSED_EXIT</td>",
    ]  # fmt: skip
    flat = after.replace("\n", "").replace(' style="text-align:right"', "")
    for row in rows:
        assert row in flat, row
    assert all("onthly review" not in u and "MISSED_EXIT" not in u for u in users)

    (reviews / "review-2026-11.json").write_text("{not json", encoding="utf-8")
    broken, _ = _operator_html(db, tmp_path / "broken", reviews)
    assert "review-2026-11.json</code>, could not be read" in broken
    db.engine.dispose()
