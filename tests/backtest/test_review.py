"""The monthly review on a simulated month (tests/backtest/review_month.py): every difference between live
trading and the backtest is found and named, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotrade.backtest.review import differences_set, monthly_review, write_review
from autotrade.store.daily_bars import read_bars
from tests.backtest import review_month as m


@pytest.mark.slow
async def test_monthly_review_explains_every_difference(db_url: str, tmp_path: Path) -> None:
    with m.simulator() as sim:
        w = await m.live_month(sim, db_url, tmp_path)
        try:
            review = monthly_review(w.db, m.MONTH, m.bars_file(tmp_path / "bars.csv"), w.settings)
            from_db = monthly_review(w.db, m.MONTH, None, w.settings)  # the bars the product recorded
            recorded = read_bars(w.db, m.D1, m.D4)
        finally:
            await w.aclose()

    assert review.skipped is None and review.scan_days == 2
    (account,) = review.accounts
    assert (account.user_id, account.account_no) == (m.TRADER.user_id, m.TRADER.account_no)
    assert account.capital == 50_000_000 and "2026-10-30" in account.capital_basis
    assert differences_set(review) == m.EXPECTED
    assert "UNEXPLAINED" not in {f.reason.value for _, f in review.differences}

    trades = {(t.code, t.trade): t for t in account.trades}
    # The four buys of 2 Nov agree to the share and the won: 100 A, 50 B, 100 D, 100 E at the close.
    for code, shares in ((m.A, 100), (m.B, 50), (m.D, 100), (m.E, 100)):
        buy = trades[(code, "BUY")]
        assert buy.agrees and buy.live is not None and buy.live.quantity == shares
    assert (m.H, "BUY") not in trades  # a low score: skipped on both sides
    # A's preserve: live 50 at 10,630 (its 10:30 price), the backtest 50 at the level 10,400.
    # Effect = live net - backtest net = (531,500 - 79 - 1,063) - (520,000 - 78 - 1,040)
    #        = 530,358 - 518,882 = 11,476 KRW (fee 0.015 % and tax 0.20 %, each truncated to the won).
    preserve = trades[(m.A, "PRESERVE")]
    assert preserve.live is not None and preserve.backtest is not None
    assert (preserve.live.price, preserve.backtest.price) == (10_630, 10_400)
    assert preserve.effect == 11_476
    # D's stop: live 50 at 9,450 after the preserve; the backtest 100 at 9,500.
    stop = trades[(m.D, "STOP_LOSS")]
    assert stop.live is not None and stop.backtest is not None
    assert (stop.live.quantity, stop.live.price, stop.backtest.quantity, stop.backtest.price) == (
        50, 9_450, 100, 9_500,
    )  # fmt: skip
    # E sold a day apart, at the same price.
    e_stop = trades[(m.E, "STOP_LOSS")]
    assert e_stop.live is not None and e_stop.backtest is not None
    assert (e_stop.live.day, e_stop.backtest.day, e_stop.live.price) == (m.D3, m.D4, 9_400)

    md, js = write_review(review, tmp_path / "out")
    text = md.read_text()
    assert "bars file's" in text and "MISSED_EXIT" in text and "| 100020 바이오 |" in text
    data = json.loads(js.read_text())
    reasons = {f["reason"] for t in data["accounts"][0]["trades"] for f in t["findings"]}
    assert reasons == {r for *_, r in m.EXPECTED}

    # The same month over the bars recorded after each close (daily_bars): the same differences. The quotes
    # after the close are the simulator's day bars (2 Nov's only from 15:00, when the simulator started), and
    # E's missing bar of 4 Nov is named for the trade that needed it.
    assert from_db.bars_source == "database daily_bars" and "recorded after each close" in from_db.prices_note
    assert differences_set(from_db) == m.EXPECTED
    bars = {(r.trading_day, r.code): (r.open, r.high, r.low, r.close) for r in recorded}
    after_d1 = {k: v for k, v in bars.items() if k[0] > m.D1}
    assert len(after_d1) == 13 and after_d1 == {k: m.BARS[k] for k in after_d1}
    # E and A after live closed them (on 4 and 3 Nov: the backtest may still hold them), F on its scan day
    assert {(m.D4, m.E), (m.D3, m.A), (m.D2, m.F)} <= set(bars) and (m.D3, m.F) not in bars
    assert (m.D3, m.E) not in bars and from_db.missing_bars == ((m.D3, m.E, "live STOP_LOSS"),)
    assert "No bar of 1 stock-days the review needed: 100050 on 11-04 (live STOP_LOSS)" in from_db.markdown()


async def test_a_month_without_scans_has_nothing_to_review(db_url: str, tmp_path: Path) -> None:
    from autotrade.config import Settings
    from autotrade.store.db import Database
    from autotrade.store.migrate import upgrade

    upgrade(db_url)
    settings = Settings(database_url=db_url, data_dir=tmp_path, local_master_key_path=tmp_path / "k")
    review = monthly_review(Database(db_url), "2026-11", m.bars_file(tmp_path / "bars.csv"), settings)
    assert review.skipped == "no accepted scan was received in the month" and review.accounts == ()
    assert "Nothing to review" in review.markdown()
