"""Same inputs, same bytes: trades CSV and metrics JSON across runs; the engine equals the reference loop."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from autotrade.backtest.config import BacktestConfig
from autotrade.backtest.data import MarketData
from autotrade.backtest.engine import run_backtest
from autotrade.backtest.reference import run_reference
from autotrade.backtest.report import write_outputs
from autotrade.backtest.synthetic import synthetic


def test_synthetic_market_is_seeded() -> None:
    bars1, scans1 = synthetic(40, 1, seed=7)
    bars2, scans2 = synthetic(40, 1, seed=7)
    pd.testing.assert_frame_equal(bars1, bars2)
    pd.testing.assert_frame_equal(scans1, scans2)
    assert not synthetic(40, 1, seed=8)[0].equals(bars1)
    assert len(scans1) == 10 * bars1["date"].nunique()
    assert (bars1["low"] <= bars1[["open", "close"]].min(axis=1)).all()
    assert (bars1["high"] >= bars1[["open", "close"]].max(axis=1)).all()


def test_same_files_give_byte_identical_trades_and_metrics(tmp_path: Path) -> None:
    bars, scans = synthetic(60, 1, seed=3)
    bars.to_csv(tmp_path / "bars.csv", index=False)
    scans.to_parquet(tmp_path / "scans.parquet", index=False)
    outputs = []
    for run in ("a", "b"):
        from autotrade.backtest.data import read_table

        data = MarketData.from_frames(
            read_table(tmp_path / "bars.csv"), read_table(tmp_path / "scans.parquet")
        )
        paths, _ = write_outputs(run_backtest(data, BacktestConfig()), tmp_path / run)
        outputs.append((paths.trades.read_bytes(), paths.metrics.read_bytes(), paths.positions.read_bytes()))
    assert outputs[0] == outputs[1]
    assert outputs[0][0].count(b"\n") > 100  # it did trade


def test_file_and_in_memory_inputs_agree(tmp_path: Path) -> None:
    bars, scans = synthetic(30, 1, seed=5)
    bars.to_parquet(tmp_path / "bars.parquet", index=False)
    from autotrade.backtest.data import read_table

    from_file = run_backtest(
        MarketData.from_frames(read_table(tmp_path / "bars.parquet"), scans), BacktestConfig()
    )
    in_memory = run_backtest(MarketData.from_frames(bars, scans), BacktestConfig())
    assert from_file.trades == in_memory.trades


def test_engine_and_reference_loop_produce_identical_trades() -> None:
    bars, scans = synthetic(80, 2, seed=11)
    cfg = BacktestConfig(max_holding_days=7)
    engine = run_backtest(MarketData.from_frames(bars, scans), cfg)
    reference = run_reference(bars, scans, cfg)
    assert engine.trades == reference.trades
    assert engine.equity == reference.equity
    assert engine.positions == reference.positions
    assert engine.skipped == reference.skipped
    assert any(t.reason == "MAX_HOLDING" for t in engine.trades)
