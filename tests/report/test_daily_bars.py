"""The daily report's ``record_daily_bars``: after the close, each code the product cared about that day (the
day's scan, the strategies open or closed today) gets its day bar from the broker's quote (ka10001 over HTTP
at the simulator) in ``daily_bars``; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path

import sqlalchemy as sa

from autotrade.domain.krx import KST
from autotrade.domain.models import ScanRow
from autotrade.sim.server import running_simulator
from autotrade.store.daily_bars import read_bars
from autotrade.store.models import DailyBar
from tasks.reports import record_daily_bars
from tests.trading.harness import Trader, make_world

DAY = date(2026, 11, 2)  # a Monday
BARS = {  # code -> (open, high, low, close) the simulator replays on DAY
    "100010": (10_000, 10_400, 9_800, 10_200),
    "100020": (20_000, 20_100, 19_000, 19_300),
    "100030": (5_000, 5_050, 4_990, 5_000),
}
UNKNOWN = "999990"  # in the scan, unknown to the broker: its quote fails


async def test_bars_recorded_after_the_close_from_the_quotes(db_url: str, tmp_path: Path) -> None:
    trader = Trader("lee", "5001000021", 10_000_000, 1_000_000)
    start = datetime.combine(DAY, time(8, 50), tzinfo=KST)
    with running_simulator(seed=3, start=start) as sim:
        sim.admin.add_stocks([{"code": c, "name": c, "prev_close": b[0]} for c, b in BARS.items()])
        sim.engine.load_bars((DAY, c, *b) for c, b in BARS.items())
        w = make_world(sim, db_url, tmp_path, [trader])
        try:
            w.store_scan(DAY, [*w.scan_for(["100010", "100020"], [9.0, 8.0]),
                               ScanRow(UNKNOWN, "없음", 7.5, 1_000, ())])  # fmt: skip
            w.store_scan(DAY, w.scan_for(["100030"], [7.0]))  # a second batch of the day counts too
            with w.installed():
                w.at(DAY, time(14, 0))
                early = await record_daily_bars.fn(DAY)
                w.at(DAY, time(16, 30))
                first = await record_daily_bars.fn(DAY)
                again = await record_daily_bars.fn(DAY)  # a re-run: the same rows, replaced
            seen = {c: (s.open, s.high, s.low, s.price) for c, s in sim.engine.stocks.items()}
            recorded = read_bars(w.db, DAY, DAY)
            with w.db.unit_of_work() as s:
                rows = s.scalar(sa.select(sa.func.count()).select_from(DailyBar))
        finally:
            await w.aclose()

    assert "before the close" in early["skipped"]
    assert first["codes"] == 4 and first["recorded"] == 3
    assert first["failed"] == 1 and first["failed_codes"] == [UNKNOWN]
    assert again["recorded"] == 3 and rows == 3
    got = {r.code: (r.open, r.high, r.low, r.close) for r in recorded}
    assert got == {c: seen[c] for c in BARS} == BARS
    assert {r.trading_day for r in recorded} == {DAY} and {r.source for r in recorded} == {"quote"}
    assert all(r.volume > 0 for r in recorded)

