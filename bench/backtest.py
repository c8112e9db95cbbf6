"""Backtester speed: the indexed engine vs the plain reference loop on a synthetic market.

Prints ONE JSON object on stdout (progress on stderr): for ``--stocks`` x ``--years`` synthetic daily bars
with ``--signals`` scan rows a day, the engine's seconds (loading the frames into the indexed market plus the
day loop; generating the market is not counted), bars and bars per second, then the same run through the
plain reference loop (:mod:`autotrade.backtest.reference`) and whether both produced identical trades.
``--reference-years`` runs the reference (and, for a like-for-like comparison, the engine again) on the first
years only when the full span would take too long; the JSON says which span each number covers.

``--fixed-cost`` times the command a user runs on a small market (``autotrade backtest --synthetic 100 1``,
248 trading days), in fresh processes, as it runs by default (trades, positions, equity and metrics files, no
charts) and with ``--report`` (the charts and HTML report, drawn by matplotlib in a forked child), next to the
fixed cost: starting Python and importing the CLI and the data stack, which a run pays whatever the market's
size. The median of ``--repeat`` runs each.

``--sweep N`` times ``N`` seeded random configurations (the tier rates, minimum score, per-stock budget and
holding limit) over the ``--stocks`` x ``--years`` market, serially and on a process pool of ``--workers``
(default: every core), and checks both give the same table. ``--skip-engine`` leaves out the engine vs
reference comparison. Run it under ``nice -n 15`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
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


def timed_command(args: list[str], repeat: int) -> tuple[float, float]:
    """Median wall seconds and CPU seconds (user + system, children included) of ``args`` in a fresh process.

    On a busy machine the wall time waits for the CPU; the CPU time is the better guide there (it counts
    the report's child as well, so it is above the wall time when both run at once on an idle machine)."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


STACK = "import autotrade.cli, autotrade.backtest.engine, autotrade.backtest.synthetic"


def fixed_cost(repeat: int) -> dict[str, Any]:
    """Seconds of a small run through the CLI, and of the parts that do not depend on the market's size."""
    python = sys.executable
    cli = [python, "-c", "import sys; from autotrade.cli import app; sys.argv[0] = 'autotrade'; app()"]
    with tempfile.TemporaryDirectory() as tmp:
        small = ["backtest", "--synthetic", "100", "1", "--no-progress", "--out", str(Path(tmp) / "out")]
        log(f"fixed cost: {repeat} run(s) each ...")
        runs = {
            "fixed_python": [python, "-c", "pass"],
            "fixed_cli_import": [python, "-c", "import autotrade.cli"],
            "fixed_data_stack_import": [python, "-c", STACK],
            "small_run": [*cli, *small],  # the default: files and summary, no charts
            "small_run_with_report": [*cli, *small, "--report"],
        }
        out: dict[str, Any] = {}
        for name, command in runs.items():
            wall, cpu = timed_command(command, repeat)
            out[f"{name}_seconds"], out[f"{name}_cpu_seconds"] = wall, cpu
        out["load_average"] = os.getloadavg()[0]
    out["small_run_market"] = "100 stocks x 248 trading days (synthetic, seed 0), CLI in a fresh process"
    # What a run pays whatever the market's size: Python, the CLI and the data stack (numpy, pydantic) loaded.
    out["fixed_cost_seconds"] = out["fixed_data_stack_import_seconds"]
    out["fixed_cost_share_of_small_run"] = out["fixed_data_stack_import_seconds"] / out["small_run_seconds"]
    out["report_extra_seconds"] = out["small_run_with_report_seconds"] - out["small_run_seconds"]
    out["small_run_under_1s"] = out["small_run_seconds"] < 1.0
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def sweep_figure(
    bars: pd.DataFrame, scans: pd.DataFrame, cfg: BacktestConfig, n: int, workers: int
) -> dict[str, Any]:
    """Seconds of ``n`` random configurations serially and on ``workers`` processes; same rows both ways."""
    from autotrade.backtest.sweep import parse_spec, random_points, run_sweep

    space = dict(
        parse_spec(spec)
        for spec in (
            "stop_loss_rate=2:8",
            "preserve_rate=2:5",
            "take_profit_rate=6:15",
            "min_ai_score=6:9",
            "max_per_stock=500000:2000000",
            "max_holding_days=3:20",
        )
    )
    points = random_points(space, n, seed=1)
    data = MarketData.from_frames(bars, scans, use_krx_calendar=cfg.use_krx_calendar)
    log(f"sweep of {n} configurations over {data.bars:,} bars, serial ...")
    t = time.perf_counter()
    serial = run_sweep(data, cfg, points, workers=1)
    serial_s = time.perf_counter() - t
    log(f"  {serial_s:.1f} s; on {workers} processes ...")
    t = time.perf_counter()
    parallel = run_sweep(data, cfg, points, workers=workers)
    parallel_s = time.perf_counter() - t
    log(f"  {parallel_s:.1f} s")
    return {
        "sweep_configurations": n,
        "sweep_valid": sum(1 for r in serial if not r["error"]),
        "sweep_bars": data.bars,
        "sweep_serial_seconds": round(serial_s, 3),
        "sweep_parallel_seconds": round(parallel_s, 3),
        "sweep_workers": workers,
        "sweep_speedup": round(serial_s / parallel_s, 2),
        "sweep_cores": os.cpu_count(),
        "sweep_identical": serial == parallel,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stocks", type=int, default=2500)
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--signals", type=int, default=10, help="scan rows a day")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--reference-years", type=int, default=None, help="run the reference loop on the first N years only"
    )
    ap.add_argument("--fixed-cost", action="store_true", help="time a small run through the CLI")
    ap.add_argument("--repeat", type=int, default=3, help="runs per fixed-cost figure (median)")
    ap.add_argument("--sweep", type=int, default=0, metavar="N", help="time a sweep of N configurations")
    ap.add_argument("--workers", type=int, default=0, help="sweep processes (0: every core)")
    ap.add_argument("--skip-engine", action="store_true", help="leave out the engine vs reference figures")
    args = ap.parse_args()
    cfg = BacktestConfig()
    out: dict[str, Any] = {}
    if args.fixed_cost:
        out.update(fixed_cost(args.repeat))
    if args.skip_engine and not args.sweep:
        print(json.dumps(out))
        return

    log(f"generating {args.stocks} stocks x {args.years} years, {args.signals} signals a day ...")
    t = time.perf_counter()
    bars, scans = synthetic(args.stocks, args.years, args.seed, args.signals)
    generate_seconds = time.perf_counter() - t
    log(f"  {len(bars):,} bars, {len(scans):,} scan rows in {generate_seconds:.1f} s")

    if args.sweep:
        from autotrade.config import usable_cores

        out.update(sweep_figure(bars, scans, cfg, args.sweep, args.workers or usable_cores()))
    if args.skip_engine:
        print(json.dumps(out))
        return

    log("engine ...")
    result, load_s, run_s = engine(bars, scans, cfg)
    seconds = load_s + run_s
    log(f"  {seconds:.2f} s (load {load_s:.2f} s, day loop {run_s:.2f} s), {len(result.trades):,} fills")

    out |= {
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
