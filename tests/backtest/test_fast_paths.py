"""The pandas-free inputs (synthetic market, plain standard CSV) give the same market as the pandas path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autotrade.backtest.config import BacktestConfig
from autotrade.backtest.data import MarketData, read_plain_csv, read_table
from autotrade.backtest.engine import run_backtest
from autotrade.backtest.synthetic import synthetic, synthetic_market

SAMPLES = Path(__file__).parent / "data"


def same(a: MarketData, b: MarketData) -> None:
    assert (a.days, a.codes, a.calendar, a.bars, a.scans_outside) == (b.days, b.codes, b.calendar, b.bars,
                                                                       b.scans_outside)  # fmt: skip
    np.testing.assert_array_equal(a.ohlc, b.ohlc)
    np.testing.assert_array_equal(a.last_close, b.last_close)
    assert a.scans == b.scans


def test_synthetic_market_without_pandas_frames() -> None:
    fast = synthetic_market(30, 1, seed=5)
    slow = MarketData.from_frames(*synthetic(30, 1, seed=5))
    same(fast, slow)
    cfg = BacktestConfig()
    assert run_backtest(fast, cfg) == run_backtest(slow, cfg)


def test_plain_csv_without_pandas(tmp_path: Path) -> None:
    bars, scans = synthetic(30, 1, seed=6)
    bars["date"] = bars["date"].dt.strftime("%Y-%m-%d")
    bars.to_csv(tmp_path / "bars.csv", index=False)
    scans.to_csv(tmp_path / "scans.csv", index=False)
    fast = read_plain_csv(tmp_path / "bars.csv", tmp_path / "scans.csv")
    assert fast is not None
    same(fast, MarketData.from_frames(read_table(tmp_path / "bars.csv"), read_table(tmp_path / "scans.csv")))
    sample = read_plain_csv(SAMPLES / "bars.csv", SAMPLES / "scans.csv")
    assert sample is not None
    same(sample, MarketData.from_frames(read_table(SAMPLES / "bars.csv"), read_table(SAMPLES / "scans.csv")))


def test_anything_else_falls_back(tmp_path: Path) -> None:
    (tmp_path / "dec.csv").write_text("date,code,open,high,low,close\n2024-01-02,005930,1.5,2,1,1.5\n")
    assert read_plain_csv(tmp_path / "dec.csv", SAMPLES / "scans.csv") is None
    assert read_plain_csv(SAMPLES / "krx" / "005930.csv", SAMPLES / "scans.csv") is None  # KRX layout
    (tmp_path / "bad.csv").write_text("date,code,open,high,low,close\n2024-01-02,005930,100,90,95,100\n")
    with pytest.raises(ValueError, match="low/high not around open and close, first: 005930"):
        read_plain_csv(tmp_path / "bad.csv", SAMPLES / "scans.csv")


HEAVY = ("pandas", "matplotlib", "pyarrow", "prefect", "sqlalchemy", "dask", "distributed")


def test_small_cli_run_does_not_import_pandas_or_matplotlib(tmp_path: Path) -> None:
    """The default run (no --report) loads none of the heavy modules: numpy, pydantic and typer only."""
    script = (
        "import sys\nfrom autotrade.cli import app\n"
        f"sys.argv = ['autotrade', 'backtest', '--bars', {str(SAMPLES / 'bars.csv')!r}, '--scans', "
        f"{str(SAMPLES / 'scans.csv')!r}, '--out', {str(tmp_path / 'out')!r}]\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr
    assert (tmp_path / "out" / "trades.csv").read_text().count("BUY") == 4
