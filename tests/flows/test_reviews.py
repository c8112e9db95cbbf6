"""The monthly and weekly review flows under the Prefect test harness, over the simulated month of
tests/backtest/review_month.py (live trading by the production tasks against the simulator over HTTP), on
SQLite and PostgreSQL: their artifacts, files and figures, the operator's notice, and clean skips."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from autotrade.notify import NotificationKind
from autotrade.report import build_daily_reports
from autotrade.report.monthly import reviews_dir
from flows.monthly_review import monthly_review_flow
from flows.weekly_review import weekly_review_flow
from tests.backtest import review_month as m


def _read_json(path: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(Path(path).read_text(encoding="utf-8"))
    return data


async def _artifact(key: str) -> str:
    async with get_client() as client:
        found = await client.read_latest_artifacts()
    texts = [a.data for a in found if a.key == key]
    assert texts, f"no {key} artifact"
    return str(texts[0])


@pytest.mark.slow
async def test_review_flows_on_a_simulated_month(prefect_server: None, db_url: str, tmp_path: Path) -> None:
    with m.simulator() as sim:
        w = await m.live_month(sim, db_url, tmp_path)
        bars = m.bars_file(tmp_path / "bars.csv")
        told: list[object] = []
        w.rt.notify = lambda n: told.append(n)  # type: ignore[method-assign]
        try:
            with w.installed():
                empty_month = await monthly_review_flow(month="2026-12", bars=str(bars))
                no_bars = await monthly_review_flow(month=m.MONTH, bars=str(tmp_path / "none.csv"))
                from_db = await monthly_review_flow(month=m.MONTH)  # no bars setting: the recorded bars
                monthly = await monthly_review_flow(month=m.MONTH, bars=str(bars))  # the latest artifact
                quiet_week = await weekly_review_flow(week_of=m.D4.replace(day=16))
                weekly = await weekly_review_flow(week_of=m.D4)
                # The operator's daily report of the 1st reads the review where the flow wrote it.
                reviews = reviews_dir(w.rt.settings.data_dir)
                daily = build_daily_reports(w.db, date(2026, 12, 1), tmp_path / "daily", {}, reviews=reviews)
        finally:
            await w.aclose()

    # The monthly review: the nine differences of the scenario, by reason; files; the operator told.
    assert monthly["differences"] == len(m.EXPECTED) == 9
    assert monthly["reasons"] == {"FILL_PRICE": 3, "MISSED_EXIT": 1, "INTRADAY_ORDER": 2, "NO_BAR": 1,
                                  "BUY_NOT_FILLED": 1, "LIMIT_BOUND": 1}  # fmt: skip
    assert _read_json(monthly["json_path"])["month"] == m.MONTH
    (_, notice) = [n for n in told if getattr(n, "kind", None) is NotificationKind.REPORT_READY]  # 2 reviews
    assert notice.title == "2026-11 월간 리뷰" and notice.audience.user_id is None  # type: ignore[attr-defined]
    assert empty_month["skipped"] == "no accepted scan was received in the month"
    assert no_bars["skipped"].startswith("no bars at")
    assert from_db["bars_source"] == "database daily_bars" and from_db["missing_bars"] == 1
    assert from_db["reasons"] == monthly["reasons"] and monthly["bars_source"].endswith("bars.csv")
    # The weekly review of 2-8 Nov, worked out by hand from the fills (fee 0.015 %, tax 0.20 %, truncated):
    #   A preserve 50 @ 10,630: 531,500 - 500,000 - 79 - 1,063 - 75 (the buy fee of 500,000) =  30,283
    #   A take-profit 50 @ 10,900: 545,000 - 500,000 - 81 - 1,090 - 75                      =  43,754
    #   D preserve 50 @ 10,450: 522,500 - 500,000 - 78 - 1,045 - 75                         =  21,302
    #   D stop 50 @ 9,450: 472,500 - 500,000 - 70 - 945 - 75                                 = -28,590
    #   E stop 100 @ 9,400: 940,000 - 1,000,000 - 141 - 1,880 - 150                          = -62,171
    # total 4,578; closed A (win), D (-7,288), E: one win in three; 4 buys + 5 sells = 9 trades.
    assert (weekly["trades"], weekly["realized_pnl"], weekly["win_rate"]) == (9, 4_578, 33.3)
    assert weekly["tier_mix"] == {"PRESERVE": 2, "STOP_LOSS": 2, "TAKE_PROFIT": 1}
    assert weekly["users"] == 1 and weekly["week"] == "2026-11-02"
    assert quiet_week["skipped"] == "no trades this week"
    assert "MISSED_EXIT" in await _artifact("monthly-review")
    assert Path(monthly["json_path"]).parent == reviews
    page = daily.operator.html_path.read_text(encoding="utf-8")
    assert "Monthly review 2026-11" in page and "9 differences" in page
    trades = _read_json(monthly["json_path"])["accounts"][0]["trades"]  # type: ignore[index]
    assert f"{len(trades)} trades compared" in page
    for t in trades:  # each trade's row: live and backtest, what differs, the reasons
        why = ", ".join(dict.fromkeys(f["reason"] for f in t["findings"])) or "-"
        assert f"<td>{t['trade']}</td>" in page and f"<td>{why}</td>" in page, t
        for f in t["findings"]:
            assert f"{f['aspect']}: {f['detail']}".replace("|", "/") in page, f
    assert "Monthly review" not in daily.users[0].html_path.read_text(encoding="utf-8")
    assert "| kim | 9 |" in await _artifact("weekly-review")
