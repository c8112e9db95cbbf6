"""Tick-to-sell-intent latency of the exit book vs a naive loop over every armed position.

Prints JSON: for 1,000 / 10,000 / 100,000 armed positions over 2,000 stocks, the p50/p99 latency (µs) from a
price tick to its sell intents and the ticks per second, for the indexed book and for a naive loop that checks
every position on every tick, on the same ticks of the same price path (``--ticks``, 2,000 by default: the
naive loop at 100,000 positions is slow).

A second figure, ``with_database``: the product's exit engine (``autotrade.trading.exit_engine``) on the
same ticks for ``--db-positions`` positions armed in a SQLite database, where a tick that fires also writes
its sell intents and the strategies' state before it returns (the intent row exists before the order is
sent). Its firing ticks show what the database write costs; its quiet ticks match the book's.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import date, datetime
from pathlib import Path

from autotrade.domain.exit_book import ExitBook
from autotrade.domain.exits import ExitStrategy, PriceTick, SellFilled
from autotrade.domain.krx import KST, floor_to_tick

AT = datetime(2026, 11, 25, 10, 0, tzinfo=KST)


def build(n_positions: int, n_stocks: int, seed: int) -> tuple[list[str], dict[str, int], list[ExitStrategy]]:
    rng = random.Random(seed)
    codes = [f"{i:06d}" for i in range(1, n_stocks + 1)]
    base = {c: floor_to_tick(rng.randint(2_000, 300_000)) for c in codes}
    strategies = []
    for _ in range(n_positions):
        code = rng.choice(codes)
        entry = floor_to_tick(int(base[code] * rng.uniform(0.97, 1.03)))
        strategies.append(ExitStrategy.arm(code, entry, rng.randint(1, 50)))
    return codes, base, strategies


def price_path(codes: list[str], base: dict[str, int], n_ticks: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed + 1)
    last = dict(base)
    ticks = []
    for _ in range(n_ticks):
        code = rng.choice(codes)
        last[code] = max(100, floor_to_tick(int(last[code] * (1 + rng.gauss(0, 0.01)))))
        ticks.append((code, last[code]))
    return ticks


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_book(strategies: list[ExitStrategy], ticks: list[tuple[str, int]]) -> dict[str, float]:
    book = ExitBook()
    for i, s in enumerate(strategies):
        book.add(i, s)
    lat: list[float] = []
    quiet: list[float] = []
    fired = 0
    clock = time.perf_counter_ns
    start = clock()
    for code, price in ticks:
        t0 = clock()
        intents = book.on_price(code, price, AT)
        lat.append((clock() - t0) / 1_000)
        if not intents:
            quiet.append(lat[-1])
        for key, intent in intents:  # fills arrive later; not part of the tick's latency
            fired += 1
            book.apply(key, SellFilled(intent.tier, intent.quantity, price, AT))
    elapsed = (clock() - start) / 1e9
    out = summary(lat, elapsed, len(ticks), fired)
    # Ticks that fire nothing show the index's own cost, which must not grow with the book.
    out["quiet_tick_p99_us"] = round(percentile(quiet, 0.99), 2)
    out["firing_ticks_us_per_intent"] = round((sum(lat) - sum(quiet)) / max(fired, 1), 2)
    return out


def run_naive(strategies: list[ExitStrategy], ticks: list[tuple[str, int]]) -> dict[str, float]:
    lat: list[float] = []
    fired = 0
    clock = time.perf_counter_ns
    start = clock()
    for code, price in ticks:
        t0 = clock()
        tick = PriceTick(price, AT)
        watched = (s for s in strategies if s.code == code and not s.is_closed and s.free > 0)
        intents = [(s, i) for s in watched for i in s.apply(tick)]
        lat.append((clock() - t0) / 1_000)
        for s, intent in intents:
            fired += 1
            s.apply(SellFilled(intent.tier, intent.quantity, price, AT))
    elapsed = (clock() - start) / 1e9
    return summary(lat, elapsed, len(ticks), fired)


def run_engine(n_positions: int, n_stocks: int, seed: int, ticks: list[tuple[str, int]]) -> dict[str, float]:
    """The product's exit engine on SQLite: arming is setup; each tick is timed through ``on_price``,
    which records every sell it fires (intent row and strategy state, one transaction) before returning."""
    from autotrade.config import Settings
    from autotrade.store.db import Database
    from autotrade.store.migrate import upgrade
    from autotrade.store.repositories import Users
    from autotrade.trading.exit_engine import ExitEngine

    work = Path(tempfile.mkdtemp(prefix="autotrade-exits-bench-"))
    url = f"sqlite:///{work / 'exits.db'}"
    upgrade(url)
    db = Database(url)
    settings = Settings(database_url=url, data_dir=work, local_master_key_path=work / "master.key")
    engine = ExitEngine(db, settings, lambda: AT)
    _, _, strategies = build(n_positions, n_stocks, seed)
    with db.unit_of_work() as s:
        users = Users(s)
        users.ensure("bench")
        users.ensure_account("bench", "9000000001")
        s.flush()
        for i, st in enumerate(strategies):
            engine.arm(s, user_id="bench", account_no="9000000001", code=st.code, name=st.code,
                       quantity=st.quantity, entry_price=st.entry_price, entry_date=date(2026, 11, 24),
                       buy_intent_key=f"bench-buy-{i}")  # fmt: skip
    lat: list[float] = []
    quiet: list[float] = []
    firing: list[float] = []
    fired = 0
    clock = time.perf_counter_ns
    start = clock()
    for code, price in ticks:
        t0 = clock()
        pending = engine.on_price(code, price, AT)
        lat.append((clock() - t0) / 1_000)
        (firing if pending else quiet).append(lat[-1])
        fired += len(pending)
    elapsed = (clock() - start) / 1e9
    db.dispose()
    out = summary(lat, elapsed, len(ticks), fired)
    out["firing_ticks"] = len(firing)
    out["firing_tick_p50_us"] = round(percentile(firing, 0.50), 2) if firing else 0.0
    out["firing_tick_p99_us"] = round(percentile(firing, 0.99), 2) if firing else 0.0
    out["quiet_tick_p99_us"] = round(percentile(quiet, 0.99), 2)
    out["database"] = "sqlite (file)"
    return out


def summary(lat: list[float], elapsed: float, n: int, fired: int) -> dict[str, float]:
    return {
        "ticks": n,
        "sell_intents": fired,
        "p50_us": round(percentile(lat, 0.50), 2),
        "p99_us": round(percentile(lat, 0.99), 2),
        "mean_us": round(statistics.fmean(lat), 2),
        "ticks_per_second": round(n / elapsed),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--positions", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--stocks", type=int, default=2_000)
    ap.add_argument("--ticks", type=int, default=2_000, help="ticks for both sides (the same ticks)")
    ap.add_argument("--db-positions", type=int, default=1_000, help="positions for the database figure")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    results = []
    for n in args.positions:
        codes, base, _ = build(n, args.stocks, args.seed)
        ticks = price_path(codes, base, args.ticks, args.seed)
        book = run_book(build(n, args.stocks, args.seed)[2], ticks)
        naive = run_naive(build(n, args.stocks, args.seed)[2], ticks)
        results.append(
            {
                "armed_positions": n,
                "stocks": args.stocks,
                "book": book,
                "naive": naive,
                "same_intents": book["sell_intents"] == naive["sell_intents"],
            }
        )
    codes, base, _ = build(args.db_positions, args.stocks, args.seed)
    ticks = price_path(codes, base, args.ticks, args.seed)
    with_db = {
        "armed_positions": args.db_positions,
        "book": run_book(build(args.db_positions, args.stocks, args.seed)[2], ticks),
        "engine_with_database": run_engine(args.db_positions, args.stocks, args.seed, ticks),
    }
    print(json.dumps({"benchmark": "exits", "results": results, "with_database": with_db}, indent=2))


if __name__ == "__main__":
    main()
