"""The report drawn in the forked child is byte for byte the one drawn in-process; an unused child ends."""

from __future__ import annotations

from pathlib import Path

from autotrade.backtest.data import MarketData
from autotrade.backtest.engine import run_backtest
from autotrade.backtest.report import ReportProcess, write_outputs
from autotrade.backtest.synthetic import synthetic
from tests.backtest.helpers import config


def test_child_draws_the_same_bytes(tmp_path: Path) -> None:
    drawer = ReportProcess()
    result = run_backtest(MarketData.from_frames(*synthetic(20, 1, seed=4)), config())
    forked, _ = write_outputs(result, tmp_path / "forked", drawer=drawer)
    local, _ = write_outputs(result, tmp_path / "local")
    for name in ("equity_chart", "drawdown_chart", "report"):
        data = getattr(forked, name).read_bytes()
        assert data == getattr(local, name).read_bytes() and len(data) > 1000, name
    assert drawer._proc is None  # joined after writing


def test_unused_child_exits_on_close() -> None:
    drawer = ReportProcess()
    proc = drawer._proc
    assert proc is not None and proc.is_alive()
    drawer.close()  # joins: would hang if the child never saw the pipe close
    assert not proc.is_alive() and proc.exitcode == 0
