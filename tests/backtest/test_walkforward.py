"""Walk-forward: choices use in-sample data only; reported figures are the out-of-sample runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from autotrade.backtest.config import BacktestConfig
from autotrade.backtest.data import MarketData
from autotrade.backtest.engine import run_backtest
from autotrade.backtest.metrics import compute_metrics
from autotrade.backtest.sweep import configure, grid, scalar_metrics
from autotrade.backtest.synthetic import synthetic
from autotrade.backtest.walkforward import Window, walk_forward, windows

POINTS = grid({"stop_loss_rate": [3.0, 6.0], "take_profit_rate": [8.0, 12.0]})
IN_DAYS, OUT_DAYS = 120, 60


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return synthetic(40, 2, seed=11)


def poisoned(frames: tuple[pd.DataFrame, pd.DataFrame], first: pd.Timestamp) -> MarketData:
    """The market with every bar and scan from ``first`` on replaced by another seed's."""
    bars, scans = frames
    other_bars, other_scans = synthetic(40, 2, seed=99)
    bars = pd.concat([bars[bars["date"] < first], other_bars[other_bars["date"] >= first]], ignore_index=True)
    scans = pd.concat([scans[scans["date"] < first], other_scans[other_scans["date"] >= first]],
                      ignore_index=True)  # fmt: skip
    return MarketData.from_frames(bars, scans)


def test_windows_roll_and_tile() -> None:
    assert windows(300, 120, 60) == [
        Window(1, 0, 120, 120, 180),
        Window(2, 60, 180, 180, 240),
        Window(3, 120, 240, 240, 300),
    ]
    assert windows(250, 120, 60)[-1] == Window(3, 120, 240, 240, 250)  # the last one shorter
    with pytest.raises(ValueError, match="too few"):
        windows(100, 120, 60)


def test_out_of_sample_data_never_reaches_the_choice(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    base = BacktestConfig()
    clean_data = MarketData.from_frames(*frames)
    clean = walk_forward(clean_data, base, POINTS, in_days=IN_DAYS, out_days=OUT_DAYS, objective="sharpe")
    assert len(clean.results) == 7  # 494 trading days in 2015-2016
    assert len({r.chosen for r in clean.results}) > 1  # the choice does vary between windows
    for k in (1, 3, 5):
        w = clean.results[k].window
        # Everything from this window's out-of-sample start on comes from another market.
        data = poisoned(frames, pd.Timestamp(clean_data.days[w.out_start]))
        dirty = walk_forward(data, base, POINTS, in_days=IN_DAYS, out_days=OUT_DAYS, objective="sharpe")
        for j in range(k + 1):  # this window and the earlier ones chose exactly as before
            assert dirty.results[j].chosen == clean.results[j].chosen, (k, j)
            assert dirty.results[j].in_sample_objective == clean.results[j].in_sample_objective, (k, j)
        # ... while its out-of-sample results, which do read the poisoned days, changed.
        assert dirty.results[k].default != clean.results[k].default


def test_reported_results_are_the_out_of_sample_runs(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    base = BacktestConfig()
    data = MarketData.from_frames(*frames)
    wf = walk_forward(data, base, POINTS, in_days=IN_DAYS, out_days=OUT_DAYS, objective="total_return",
                      workers=2)  # fmt: skip
    r = wf.results[2]
    w = r.window
    assert (w.in_start, w.in_end, w.out_start, w.out_end) == (120, 240, 240, 300)
    tuned = run_backtest(data, configure(base, POINTS[r.chosen]), start=w.out_start, end=w.out_end)
    assert r.tuned == scalar_metrics(compute_metrics(tuned))
    assert r.tuned["first_day"] == data.days[240].isoformat() and r.tuned["trading_days"] == 60
    default = run_backtest(data, base, start=w.out_start, end=w.out_end)
    assert r.default == scalar_metrics(compute_metrics(default))
    # The choice is the in-sample best by the objective.
    past = data.until(w.in_end)
    runs = [run_backtest(past, configure(base, p), start=w.in_start) for p in POINTS]
    in_sample = [compute_metrics(x)["total_return"] for x in runs]
    assert r.chosen == in_sample.index(max(in_sample)) and r.in_sample_objective == max(in_sample)
    growth = 1.0
    for x in wf.results:
        growth *= 1 + x.default["total_return"]
    assert wf.compounded("default") == pytest.approx(growth - 1)


def test_cli_walk_forward(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from autotrade.backtest.cli import backtest_app

    app = typer.Typer()
    app.add_typer(backtest_app, name="backtest")
    out = tmp_path / "wf"
    result = CliRunner().invoke(app, ["backtest", "walk-forward", "--synthetic", "20", "1", "--param",
                                      "stop_loss_rate=3,6", "--in-days", "100", "--out-days", "50",
                                      "--workers", "1", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 window(s)" in result.output and "tuned" in result.output and "default" in result.output
    table = pd.read_csv(out / "walkforward.csv")
    # XKRX 2015: 248 trading days; days 100, 150 and 200 are 2015-06-01, 2015-08-10 and 2015-10-23.
    assert list(table["out_first"]) == ["2015-06-01", "2015-08-10", "2015-10-23"]
    assert list(table["out_last"])[-1] == "2015-12-30"
    assert "out-of-sample" in (out / "walkforward.html").read_text()
