"""Sweeps: each row is exactly the single run of its configuration, in parallel or not; seeded samples."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from autotrade.backtest.cli import backtest_app
from autotrade.backtest.config import BacktestConfig
from autotrade.backtest.data import MarketData
from autotrade.backtest.engine import run_backtest
from autotrade.backtest.metrics import compute_metrics
from autotrade.backtest.sweep import configure, grid, parse_spec, random_points, run_sweep, scalar_metrics
from autotrade.backtest.synthetic import synthetic

POINTS = [
    {"stop_loss_rate": 3.0, "take_profit_rate": 8.0, "max_per_stock": 500_000},
    {"stop_loss_rate": 3.0, "take_profit_rate": 12.0, "max_holding_days": 5},
    {"stop_loss_rate": 6.0, "take_profit_rate": 8.0, "min_ai_score": 8.0},
    {"stop_loss_rate": 6.0, "preserve_rate": 2.0, "take_profit_rate": 12.0, "max_per_stock": 2_000_000},
]


@pytest.fixture(scope="module")
def market() -> MarketData:
    bars, scans = synthetic(50, 1, seed=11)
    return MarketData.from_frames(bars, scans)


def test_sweep_of_four_matches_four_single_runs(market: MarketData) -> None:
    base = BacktestConfig()
    singles = [scalar_metrics(compute_metrics(run_backtest(market, configure(base, p)))) for p in POINTS]
    assert len({s["final_equity"] for s in singles}) == 4  # four different outcomes to tell apart
    for workers in (1, 2):
        rows = run_sweep(market, base, POINTS, workers=workers)
        for row, single, point in zip(rows, singles, POINTS, strict=True):
            assert row["error"] == ""
            assert {k: row[k] for k in single} == single
            assert {k: row[k] for k in point} == point


def test_cli_sweep_table_equals_single_cli_runs(tmp_path: Path) -> None:
    app = typer.Typer()
    app.add_typer(backtest_app, name="backtest")
    runner = CliRunner()
    market = ["--synthetic", "30", "1", "--seed", "5"]
    result = runner.invoke(app, ["backtest", "sweep", *market, "--param", "stop_loss_rate=3,6",
                                 "--param", "take_profit_rate=8,12", "--workers", "2",
                                 "--out", str(tmp_path / "sweep")])  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(tmp_path / "sweep" / "sweep.parquet")
    assert len(table) == 4 and (tmp_path / "sweep" / "heatmap.png").read_bytes().startswith(b"\x89PNG")
    assert "<img" in (tmp_path / "sweep" / "sweep.html").read_text()
    for i, (stop, take) in enumerate([(3, 8), (3, 12), (6, 8), (6, 12)]):
        cfg = tmp_path / f"c{i}.toml"
        cfg.write_text(f"stop_loss_rate = {stop}\ntake_profit_rate = {take}\n")
        out = tmp_path / f"single{i}"
        single = runner.invoke(app, ["backtest", *market, "--config", str(cfg), "--out", str(out),
                                     "--no-report"])  # fmt: skip
        assert single.exit_code == 0, single.output
        assert not (out / "report.html").exists()
        metrics = json.loads((out / "metrics.json").read_text())
        row = table.iloc[i]
        assert (row["stop_loss_rate"], row["take_profit_rate"]) == (stop, take)
        for key, value in scalar_metrics(metrics).items():
            got = row[key]
            if value is None:
                assert got is None or (isinstance(got, float) and math.isnan(got)), key
            else:
                assert got == value, (i, key, got, value)


def test_grid_random_and_invalid_points(market: MarketData) -> None:
    assert grid({"take_profit_rate": [8, 10], "stop_loss_rate": [3, 5]}) == [
        {"stop_loss_rate": 3, "take_profit_rate": 8},
        {"stop_loss_rate": 3, "take_profit_rate": 10},
        {"stop_loss_rate": 5, "take_profit_rate": 8},
        {"stop_loss_rate": 5, "take_profit_rate": 10},
    ]
    space = dict([parse_spec("stop_loss_rate=2:8"), parse_spec("max_holding_days=3:10"),
                  parse_spec("max_per_stock=500000:2000000"), parse_spec("min_ai_score=6,7,8")])  # fmt: skip
    a, b = random_points(space, 20, seed=3), random_points(space, 20, seed=3)
    assert a == b and a != random_points(space, 20, seed=4)
    for p in a:
        assert 2.0 <= p["stop_loss_rate"] <= 8.0 and round(p["stop_loss_rate"], 1) == p["stop_loss_rate"]
        assert 3 <= p["max_holding_days"] <= 10 and p["max_per_stock"] % 10_000 == 0
        assert p["min_ai_score"] in (6.0, 7.0, 8.0)
    rows = run_sweep(market, BacktestConfig(), [{"preserve_rate": 9.0, "take_profit_rate": 8.0}])
    assert "take_profit_rate must not be below preserve_rate" in rows[0]["error"]
    assert "trades" not in rows[0]
