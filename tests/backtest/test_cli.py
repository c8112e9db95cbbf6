"""``autotrade backtest`` through typer's test runner: a small synthetic run's outputs, bad input's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from autotrade.backtest.cli import backtest_app
from tests.backtest.helpers import frames

app = typer.Typer()
app.add_typer(backtest_app, name="backtest")


@app.command("other")
def _other() -> None:  # a second command keeps "backtest" a subcommand, as in autotrade.cli
    """Unused."""


runner = CliRunner()
OUTPUTS = (
    "trades.csv",
    "metrics.json",
    "equity.png",
    "drawdown.png",
    "report.html",
    "positions.csv",
    "equity.csv",
)


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["backtest", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_synthetic_run_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, output = invoke("--synthetic", "40", "1", "--seed", "3", "--out", str(out), "--no-progress",
                          "--report")  # fmt: skip
    assert code == 0, output
    assert "trades" in output and "win rate" in output and str(out) in output
    assert "--report" not in output
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    assert (out / "equity.png").read_bytes().startswith(b"\x89PNG")
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("trades", "win_rate", "stop_trigger_rate", "average_holding_days", "total_return", "cagr",
                "max_drawdown", "sharpe", "profit_factor", "turnover", "fees_paid"):  # fmt: skip
        assert key in metrics
    assert metrics["stocks"] == 40 and metrics["trades"] > 0
    assert "<img" in (out / "report.html").read_text()
    header = (out / "trades.csv").read_text().splitlines()[0]
    assert header.startswith("trade_id,position_id,date,code")


def test_charts_and_html_only_on_request(tmp_path: Path) -> None:
    """By default the files and the summary only (matplotlib never loads), and the way to the report."""
    out = tmp_path / "out"
    code, output = invoke("--synthetic", "20", "1", "--seed", "3", "--out", str(out), "--no-progress")
    assert code == 0, output
    written = sorted(p.name for p in out.iterdir())
    assert written == ["equity.csv", "metrics.json", "positions.csv", "trades.csv"]
    assert "charts and HTML report: run again with --report" in output
    code, output = invoke("--synthetic", "20", "1", "--seed", "3", "--out", str(out), "--no-report")
    assert code == 0 and not (out / "report.html").exists() and "--report" in output


def test_files_and_config(tmp_path: Path) -> None:
    bars, scans = frames([(10_000,) * 4, (10_100, 10_900, 10_050, 10_850)])
    bars.to_csv(tmp_path / "bars.csv", index=False)
    scans.to_csv(tmp_path / "scans.csv", index=False)
    (tmp_path / "c.toml").write_text("[backtest]\nuse_krx_calendar = false\nmax_per_stock = 500000\n")
    out = tmp_path / "out"
    code, output = invoke("--bars", str(tmp_path / "bars.csv"), "--scans", str(tmp_path / "scans.csv"),
                          "--config", str(tmp_path / "c.toml"), "--out", str(out))  # fmt: skip
    assert code == 0, output
    lines = (out / "trades.csv").read_text().splitlines()
    assert [line.split(",")[6] for line in lines[1:]] == ["BUY", "PRESERVE", "TAKE_PROFIT"]
    assert lines[1].split(",")[8] == "50"  # 500,000 // 10,000


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, str]:
    bars, scans = frames([(10_000,) * 4, (10_000,) * 4])
    bars.to_csv(tmp_path / "bars.csv", index=False)
    scans.to_csv(tmp_path / "scans.csv", index=False)
    bars.drop(columns=["low"]).to_csv(tmp_path / "no_low.csv", index=False)
    (tmp_path / "bad.toml").write_text("stop_loss_rate = -1\n")
    (tmp_path / "unknown.toml").write_text("stop_los_rate = 3\n")
    (tmp_path / "bars.txt").write_text("x")
    (tmp_path / "empty.csv").write_text("")
    names = {"bars": "bars.csv", "scans": "scans.csv", "no_low": "no_low.csv", "bad": "bad.toml",
             "unknown": "unknown.toml", "txt": "bars.txt", "empty": "empty.csv", "out": "out"}  # fmt: skip
    return {key: str(tmp_path / name) for key, name in names.items()}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --bars and --scans, or --synthetic"),
        (["--synthetic", "5", "1", "--bars", "{bars}", "--scans", "{scans}"], "not both"),
        (["--bars", "{bars}"], "--bars needs --scans"),
        (["--scans", "{scans}"], "--scans needs --bars"),
        (["--bars", "/nonexistent/bars.csv", "--scans", "{scans}"], "does not exist"),
        (["--bars", "{bars}", "--scans", "/nonexistent/scans.csv"], "does not exist"),
        (["--bars", "{no_low}", "--scans", "{scans}"], "unknown column layout"),
        (["--bars", "{scans}", "--scans", "{bars}"], "unknown column layout"),
        (["--bars", "{bars}", "--scans", "{bars}"], "missing column(s) name"),
        (["--bars", "{txt}", "--scans", "{scans}"], "expected a .csv or .parquet"),
        (["--bars", "{empty}", "--scans", "{scans}"], "cannot read"),
        (["--synthetic", "0", "1"], "must be positive"),
        (["--synthetic", "5", "1", "--config", "{bad}"], "stop_loss_rate"),
        (["--synthetic", "5", "1", "--config", "{unknown}"], "stop_los_rate"),
        (["--synthetic", "5", "1", "--config", "/nonexistent/c.toml"], "does not exist"),
    ],
)
def test_bad_input_is_a_usage_error(inputs: dict[str, str], args: list[str], message: str) -> None:
    code, output = invoke(*[a.format(**inputs) for a in args], "--out", inputs["out"])
    assert code == 2, output
    flat = " ".join(output.replace("│", " ").split())
    assert "Invalid value" in flat and message in flat, flat
    assert "Traceback" not in output


def test_krx_export_directory_runs(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    out = tmp_path / "out"
    code, output = invoke("--bars", str(data / "krx"), "--scans", str(data / "scans.csv"), "--out", str(out))
    assert code == 0, output
    assert "22 trading days" in output and "43 bars, 2 stocks" in output
    assert (out / "trades.csv").read_text().count("BUY") == 4


def test_out_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    code, output = invoke("--synthetic", "5", "1", "--out", str(tmp_path / "file"))
    assert code == 2 and "not a directory" in output
