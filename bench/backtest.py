"""Backtester speed: the indexed engine vs the plain reference loop on a synthetic market.

Prints ONE JSON object on stdout (progress on stderr): for ``--stocks`` x ``--years`` synthetic daily bars
with ``--signals`` scan rows a day, the engine's seconds (loading the frames into the indexed market plus the
day loop; generating the market is not counted), bars and bars per second, then the same run through the
plain reference loop (:mod:`autotrade.backtest.reference`) and whether both produced identical trades.
``--reference-years`` runs the reference (and, for a like-for-like comparison, the engine again) on the first
years only when the full span would take too long; the JSON says which span each number covers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from typing import Any

import pandas as pd

from autotrade.backtest.config import BacktestConfig
from autotrade.backtest.data import MarketData
from autotrade.backtest.engine import BacktestResult, run_backtest
from autotrade.backtest.reference import run_reference
from autotrade.backtest.synthetic import synthetic

TARGET_SECONDS = 5.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def engine(
    bars: pd.DataFrame, scans: pd.DataFrame, cfg: BacktestConfig
) -> tuple[BacktestResult, float, float]:
    start = time.perf_counter()
    data = MarketData.from_frames(bars, scans, use_krx_calendar=cfg.use_krx_calendar)
    loaded = time.perf_counter()
    result = run_backtest(data, cfg)
    return result, loaded - start, time.perf_counter() - loaded


def first_years(bars: pd.DataFrame, scans: pd.DataFrame, years: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    first = pd.Timestamp(bars["date"].min())
    end = pd.Timestamp(date(first.year + years, first.month, first.day))
    return (
        bars[bars["date"] < end].reset_index(drop=True),
        scans[scans["date"] < end].reset_index(drop=True),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stocks", type=int, default=2500)
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--signals", type=int, default=10, help="scan rows a day")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--reference-years", type=int, default=None, help="run the reference loop on the first N years only"
    )
    args = ap.parse_args()
    cfg = BacktestConfig()

    log(f"generating {args.stocks} stocks x {args.years} years, {args.signals} signals a day ...")
    t = time.perf_counter()
    bars, scans = synthetic(args.stocks, args.years, args.seed, args.signals)
    generate_seconds = time.perf_counter() - t
    log(f"  {len(bars):,} bars, {len(scans):,} scan rows in {generate_seconds:.1f} s")

    log("engine ...")
    result, load_s, run_s = engine(bars, scans, cfg)
    seconds = load_s + run_s
    log(f"  {seconds:.2f} s (load {load_s:.2f} s, day loop {run_s:.2f} s), {len(result.trades):,} fills")

    out: dict[str, Any] = {
        "stocks": args.stocks,
        "years": args.years,
        "signals_per_day": args.signals,
        "seed": args.seed,
        "trading_days": len(result.equity),
        "bars": result.bars,
        "scan_rows": len(scans),
        "fills": len(result.trades),
        "generate_seconds": round(generate_seconds, 3),
        "seconds": round(seconds, 3),
        "load_seconds": round(load_s, 3),
        "loop_seconds": round(run_s, 3),
        "bars_per_second": round(result.bars / seconds),
        "target_seconds": TARGET_SECONDS,
        "under_target": seconds < TARGET_SECONDS,
    }

    ref_bars, ref_scans, compare = bars, scans, result
    ref_years = args.years
    if args.reference_years is not None and args.reference_years < args.years:
        ref_years = args.reference_years
        ref_bars, ref_scans = first_years(bars, scans, ref_years)
        log(f"engine on the first {ref_years} year(s) for the comparison ...")
        compare, c_load, c_run = engine(ref_bars, ref_scans, cfg)
        engine_span_seconds = c_load + c_run
    else:
        engine_span_seconds = seconds
    del bars, scans

    log(f"reference loop on {ref_years} year(s), {len(ref_bars):,} bars ...")
    t = time.perf_counter()
    reference = run_reference(ref_bars, ref_scans, cfg)
    reference_seconds = time.perf_counter() - t
    log(f"  {reference_seconds:.2f} s")

    out.update(
        {
            "reference_years": ref_years,
            "reference_bars": reference.bars,
            "reference_seconds": round(reference_seconds, 3),
            "reference_bars_per_second": round(reference.bars / reference_seconds),
            "engine_seconds_same_span": round(engine_span_seconds, 3),
            "speedup": round(reference_seconds / engine_span_seconds, 2),
            "identical_trades": compare.trades == reference.trades and compare.equity == reference.equity,
        }
    )
    if ref_years != args.years:
        out["note"] = f"reference loop and speedup over the first {ref_years} of {args.years} years"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
