"""A simulated month of live trading for the monthly and weekly reviews: one account traded by the production
tasks against the simulator over HTTP (tests/trading/harness.py), the simulator replaying the daily bars the
review then backtests over, so every live/backtest difference is one this scenario causes on purpose.

Month: November 2026, four trading days (Mon 2 to Thu 5), the account's cash snapshot taken on Fri 30 Oct.
Rules: tiers 5/4/8 %, at most 4 holdings, 1,000,000 KRW a stock. The watch reads prices only at chosen moments
(``World.watch_once``), so what live sees is fixed. Bars replay as open -> high -> low -> close on a down day
(open -> low -> high -> close on an up day), each leg a third of the 09:00-15:30 session (130 minutes):

- A 100010, bought 2 Nov at 10,000 (100 shares): on 3 Nov (10,050 / 10,900 / 10,000 / 10,040) live sells the
  preserve half at 10:30 (price 10,630) and the rest at 11:10 (10,900, the high); the backtest fills at the
  levels, 10,400 and 10,800: two FILL_PRICE differences.
- B 100020, bought at 20,000 (50 shares): on 3 Nov (20,000 / 20,200 / 18,800 / 19,900) the low reaches the
  stop 19,000 at 13:20, but live reads prices at 12:30 (19,340) and 14:00 (19,130) only: MISSED_EXIT.
- D 100040, bought at 10,000: on 4 Nov (10,000 / 10,450 / 9,450 / 9,600) live sees the high first (preserve,
  50 at 10,450 at 11:10), then the low (stop, 50 at 9,450 at 13:20); the backtest takes the stop first,
  100 at 9,500: INTRADAY_ORDER (the preserve, the stop's shares) and FILL_PRICE (the stop's price).
- E 100050, bought at 10,000: trades on 4 Nov, opening at 9,400 through the stop (live sells at 9,400), but
  the bars file has no bar of it that day (a suspended day in the data): the backtest sells on 5 Nov's open,
  9,400: NO_BAR.
- 3 Nov's scan: F 100060 (9.0) and G 100070 (8.5). Live holds B, D, E (3): F is ordered but no seller comes
  after hours (fill rate 0 that evening): BUY_NOT_FILLED; G would be a fifth holding: LIMIT_BOUND. The
  backtest, holding D and E only, buys both.
- H 100080 scores 6.5: skipped on both sides (no difference).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time
from pathlib import Path

import pandas as pd

from autotrade.domain.krx import KST
from autotrade.sim.server import RunningSimulator, running_simulator
from tests.trading.harness import Trader, World, make_world

D0, D1, D2, D3, D4 = (
    date(2026, 10, 30),
    date(2026, 11, 2),
    date(2026, 11, 3),
    date(2026, 11, 4),
    date(2026, 11, 5),
)
MONTH = "2026-11"
A, B, D, E, F, G, H = "100010", "100020", "100040", "100050", "100060", "100070", "100080"
NAMES = {A: "가전", B: "바이오", D: "화학", E: "조선", F: "반도체", G: "게임", H: "식품"}
TRADER = Trader("kim", "5001000011", 50_000_000, 10_000_000)


def _flat(p: int, step: int) -> tuple[int, int, int, int]:
    return (p, p + step, p - step, p)


# (day, code) -> (open, high, low, close): what the simulator replays
BARS: dict[tuple[date, str], tuple[int, int, int, int]] = {}
for _day in (D0, D1, D2, D3, D4):
    for _code, _price, _step in ((A, 10_000, 50), (B, 20_000, 100), (D, 10_000, 50), (E, 10_000, 50),
                                 (F, 30_000, 100), (G, 5_000, 20), (H, 8_000, 20)):  # fmt: skip
        BARS[(_day, _code)] = _flat(_price, _step)
BARS[(D2, A)] = (10_050, 10_900, 10_000, 10_040)
BARS[(D3, A)] = BARS[(D4, A)] = _flat(10_040, 50)
BARS[(D2, B)] = (20_000, 20_200, 18_800, 19_900)
BARS[(D3, B)] = BARS[(D4, B)] = _flat(19_900, 100)
BARS[(D3, D)] = (10_000, 10_450, 9_450, 9_600)
BARS[(D4, D)] = _flat(9_600, 50)
BARS[(D3, E)] = (9_400, 9_500, 9_350, 9_450)
BARS[(D4, E)] = (9_400, 9_450, 9_300, 9_400)
MISSING_FROM_FILE = {(D3, E)}  # the bars file's suspended day

EXPECTED = {
    (A, "PRESERVE", "PRICE", "FILL_PRICE"),
    (A, "TAKE_PROFIT", "PRICE", "FILL_PRICE"),
    (B, "STOP_LOSS", "ONLY_BACKTEST", "MISSED_EXIT"),
    (D, "PRESERVE", "ONLY_LIVE", "INTRADAY_ORDER"),
    (D, "STOP_LOSS", "QUANTITY", "INTRADAY_ORDER"),
    (D, "STOP_LOSS", "PRICE", "FILL_PRICE"),
    (E, "STOP_LOSS", "DAY", "NO_BAR"),
    (F, "BUY", "ONLY_BACKTEST", "BUY_NOT_FILLED"),
    (G, "BUY", "ONLY_BACKTEST", "LIMIT_BOUND"),
}


def bars_file(path: Path) -> Path:
    """The month's bars as the review reads them (the standard CSV layout), without the suspended day."""
    rows = [
        {"date": d.isoformat(), "code": c, "open": o, "high": h, "low": lo, "close": cl}
        for (d, c), (o, h, lo, cl) in sorted(BARS.items())
        if (d, c) not in MISSING_FROM_FILE
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@contextmanager
def simulator() -> Iterator[RunningSimulator]:
    start = datetime.combine(D1, time(15, 0), tzinfo=KST)
    with running_simulator(seed=11, start=start, after_hours_fill_rate=1.0) as sim:
        sim.admin.add_stocks(
            [{"code": c, "name": n, "prev_close": BARS[(D0, c)][3]} for c, n in NAMES.items()]
        )
        sim.engine.load_bars((d, c, *bar) for (d, c), bar in BARS.items() if d != D0)
        yield sim


async def live_month(sim: RunningSimulator, db_url: str, tmp: Path) -> World:
    """The month traded live: the evening buys, the watch at the chosen moments, the closes, and each day's
    bars recorded as the daily report does after the close (``record_daily_bars``: the broker's quotes into
    ``daily_bars``), but for E's bar of 4 Nov, dropped as the bars file drops it (a quote that failed)."""
    from tasks.reports import snapshot_equity

    w = make_world(sim, db_url, tmp, [TRADER], max_stock_count=4, max_per_stock=1_000_000)
    with w.installed():  # the account's cash before the month, as the daily report records it
        await snapshot_equity.fn([(TRADER.user_id, TRADER.account_no)], D0)
    await w.evening(D1, w.scan_for([A, B, D, E, H], [9.5, 9.3, 9.1, 8.9, 6.5]))
    await record_bars(w, D1)
    await watch_at(w, D2, [time(9, 0), time(10, 30), time(11, 10), time(12, 30), time(14, 0)])
    await w.close_day(D2)
    sim.engine.after_hours_fill_rate = 0.0  # nobody sells after hours this evening
    await w.evening(D2, w.scan_for([F, G], [9.0, 8.5]))
    sim.engine.after_hours_fill_rate = 1.0
    await record_bars(w, D2)
    await watch_at(w, D3, [time(9, 0), time(11, 10), time(13, 20)])
    await w.close_day(D3)
    await record_bars(w, D3)
    await watch_at(w, D4, [time(9, 0), time(12, 0)])
    await w.close_day(D4)
    await record_bars(w, D4)
    return w


async def record_bars(w: World, day: date) -> dict[str, object]:
    """The daily report's step at 16:30: the day's bars from the quotes (``daily_bars``)."""
    import sqlalchemy as sa

    from autotrade.store.models import DailyBar
    from tasks.reports import record_daily_bars

    w.at(day, time(16, 30))
    with w.installed():
        out: dict[str, object] = await record_daily_bars.fn(day)
    with w.db.unit_of_work() as s:
        for d, c in MISSING_FROM_FILE & {(day, code) for code in NAMES}:
            s.execute(sa.delete(DailyBar).where(DailyBar.trading_day == d, DailyBar.code == c))
    return out


async def watch_at(w: World, day: date, moments: list[time]) -> None:
    for t in moments:
        w.at(day, t)
        await w.watch_once(day)
