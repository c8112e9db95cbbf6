"""The monthly review on a simulated month (tests/backtest/review_month.py): every difference between live
trading and the backtest is found and named, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotrade.backtest.review import differences_set, monthly_review, write_review
from tests.backtest import review_month as m


@pytest.mark.slow
async def test_monthly_review_explains_every_difference(db_url: str, tmp_path: Path) -> None:
    with m.simulator() as sim:
        w = await m.live_month(sim, db_url, tmp_path)
        try:
            review = monthly_review(w.db, m.MONTH, m.bars_file(tmp_path / "bars.csv"), w.settings)
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
    assert "no daily prices" in text and "MISSED_EXIT" in text and "| 100020 바이오 |" in text
    data = json.loads(js.read_text())
    reasons = {f["reason"] for t in data["accounts"][0]["trades"] for f in t["findings"]}
    assert reasons == {r for *_, r in m.EXPECTED}


async def test_a_month_without_scans_has_nothing_to_review(db_url: str, tmp_path: Path) -> None:
    from autotrade.config import Settings
    from autotrade.store.db import Database
    from autotrade.store.migrate import upgrade

    upgrade(db_url)
    settings = Settings(database_url=db_url, data_dir=tmp_path, local_master_key_path=tmp_path / "k")
    review = monthly_review(Database(db_url), "2026-11", m.bars_file(tmp_path / "bars.csv"), settings)
    assert review.skipped == "no accepted scan was received in the month" and review.accounts == ()
    assert "Nothing to review" in review.markdown()
