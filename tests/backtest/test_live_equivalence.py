"""The live exit state machine fed a price path tick by tick sells exactly what the backtester sells.

Paths move one KRX tick at a time within a day (so every level is traded at exactly its price) and may gap
at the open. The live side arms :class:`ExitStrategy` at the backtester's entry (the scan day's close and
floor(1,000,000 / close) shares), feeds every tick and fills each sell intent at that tick's price. The
backtester sees the same path only as bars: daily bars when each day runs open -> low -> high -> close (the
order its conservative convention assumes), and minute bars, one per monotone run of the path, for
arbitrary paths.
"""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta

import pandas as pd
import pytest

from autotrade.backtest.data import MarketData
from autotrade.backtest.engine import run_backtest
from autotrade.domain.exits import DayEnd, ExitStrategy, PriceTick, SellFilled
from autotrade.domain.krx import KST, ceil_to_tick, floor_to_tick
from tests.backtest.helpers import CODE, config, frames, weekdays

Exit = tuple[date, str, int, int]
ENTRIES = (1_995, 4_985, 10_000, 12_340, 23_450, 61_700, 203_500)


def up(p: int) -> int:
    return ceil_to_tick(p + 1)


def down(p: int) -> int:
    return floor_to_tick(p - 1)


def walk(p: int, target: int) -> list[int]:
    """Ticks from ``p`` (exclusive) to ``target`` (inclusive), one tick at a time."""
    out = []
    while p != target:
        p = up(p) if target > p else down(p)
        out.append(p)
    return out


def gap_open(rng: random.Random, prev: int) -> int:
    move = rng.choice([0.0, 0.0, rng.uniform(-0.03, 0.03), rng.uniform(-0.12, 0.12)])
    return floor_to_tick(max(int(prev * (1 + move)), 100))


def shaped_day(rng: random.Random, prev: int) -> list[int]:
    """open -> low -> high -> close, each leg one tick at a time."""
    o = gap_open(rng, prev)
    path = [o]
    lo = o
    for _ in range(rng.randint(0, 40)):
        lo = down(lo)
    path += walk(o, lo)
    hi = lo
    for _ in range(rng.randint(len(path) - 1, len(path) + 60)):
        hi = up(hi)
    path += walk(lo, hi)
    close = hi
    for _ in range(rng.randint(0, 40)):
        close = max(down(close), lo)
    return path + walk(hi, close)


def random_day(rng: random.Random, prev: int) -> list[int]:
    """A random walk of single ticks from a (possibly gapped) open."""
    path = [gap_open(rng, prev)]
    for _ in range(rng.randint(1, 80)):
        path.append(up(path[-1]) if rng.random() < 0.5 else down(path[-1]))
    return path


def live_exits(entry: int, quantity: int, days: list[date], paths: list[list[int]]) -> list[Exit]:
    s = ExitStrategy.arm(CODE, entry, quantity)
    out: list[Exit] = []
    for day, path in zip(days, paths, strict=True):
        at = datetime.combine(day, time(9, 0), KST)
        for i, price in enumerate(path):
            tick_at = at + timedelta(seconds=i)
            for intent in s.apply(PriceTick(price, tick_at)):
                s.apply(SellFilled(intent.tier, intent.quantity, price, tick_at))
                out.append((day, intent.tier.value, intent.quantity, price))
            if s.is_closed:
                return out
        s.apply(DayEnd(datetime.combine(day, time(15, 30), KST)))
    return out


def monotone_runs(path: list[int]) -> list[list[int]]:
    """Split a path into monotone runs; consecutive runs share their turning point."""
    runs: list[list[int]] = [[path[0]]]
    direction = 0
    for p in path[1:]:
        last = runs[-1][-1]
        step = (p > last) - (p < last)
        if step and direction and step != direction:
            runs.append([last])
        runs[-1].append(p)
        direction = step or direction
    return runs


def backtest_exits(entry: int, days: list[date], paths: list[list[int]], *, with_minutes: bool) -> list[Exit]:
    ohlc = [(entry, entry, entry, entry)] + [(p[0], max(p), min(p), p[-1]) for p in paths]
    bars, scans = frames(ohlc)
    minutes = None
    if with_minutes:
        rows = []
        for day, path in zip(days, paths, strict=True):
            at = datetime.combine(day, time(9, 0), KST)
            for i, run in enumerate(monotone_runs(path)):
                rows.append(
                    {"datetime": at + timedelta(minutes=i), "code": CODE, "open": run[0], "high": max(run),
                     "low": min(run), "close": run[-1]}
                )  # fmt: skip
        minutes = pd.DataFrame(rows)
    result = run_backtest(MarketData.from_frames(bars, scans, minutes, use_krx_calendar=False), config())
    return [(t.day, t.reason, t.quantity, t.price) for t in result.trades if t.side.value == "SELL"]


@pytest.mark.parametrize("shape", ["daily bars, open-low-high-close days", "minute bars, random paths"])
def test_live_state_machine_and_backtester_agree(shape: str) -> None:
    with_minutes = shape.startswith("minute")
    rng = random.Random(20261125)
    seen: set[str] = set()
    for _ in range(200):
        entry = rng.choice(ENTRIES)
        n_days = rng.randint(1, 8)
        days = weekdays(n_days + 1)
        paths: list[list[int]] = []
        prev = entry
        for _ in range(n_days):
            paths.append(random_day(rng, prev) if with_minutes else shaped_day(rng, prev))
            prev = paths[-1][-1]
        live = live_exits(entry, 1_000_000 // entry, days[1:], paths)
        assert backtest_exits(entry, days[1:], paths, with_minutes=with_minutes) == live, (entry, paths)
        seen.update(tier for _, tier, _, _ in live)
        seen.update(f"{len(live)} exits" for _ in live[:1])
    # The paths exercised every tier and both single and partial exits.
    assert {"STOP_LOSS", "PRESERVE", "TAKE_PROFIT", "1 exits", "2 exits"} <= seen
