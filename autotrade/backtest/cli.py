"""``autotrade backtest``: run the backtester on files or on a synthetic market and write its reports;
``autotrade backtest sweep`` and ``autotrade backtest walk-forward`` run many configurations.

Kept light at import (typer only): the data stack (pandas, numpy, matplotlib) loads when the command runs.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    import pandas as pd

    from autotrade.backtest.config import BacktestConfig
    from autotrade.backtest.data import MarketData


def _existing_file(path: Path, option: str) -> Path:
    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist", param_hint=option)
    if not path.is_file():
        raise typer.BadParameter(f"{path} is not a file", param_hint=option)
    return path


def _read(path: Path, option: str) -> pd.DataFrame:
    from autotrade.backtest.data import read_table

    try:
        return read_table(_existing_file(path, option))
    except typer.BadParameter:
        raise
    except (ValueError, OSError, ImportError) as exc:  # pandas/pyarrow parse errors are ValueErrors
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint=option) from None


def _read_bars(path: Path) -> pd.DataFrame:
    from autotrade.backtest.sources import read_bars

    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist", param_hint="--bars")
    try:
        return read_bars(path)
    except (ValueError, OSError, ImportError, KeyError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint="--bars") from None


def _percent(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


BARS_HELP = (
    "Daily bars, CSV or Parquet, a file or a directory of files: date,code,open,high,low,close[,volume], "
    "or a KRX data-portal export (CP949), or a saved pykrx / FinanceDataReader frame "
    "(see autotrade.backtest.sources)."
)
SCANS_HELP = "Scan results, CSV or Parquet: date,code,name,score,price."
CONFIG_HELP = "TOML or JSON file of backtest settings (risk limits, exit rates, costs)."
SYNTHETIC_HELP = "Run on a seeded synthetic market instead of files."
MINUTES_HELP = "Optional minute bars (datetime,code,open,high,low,close) to order levels."

backtest_app = typer.Typer(
    help="Backtest the strategy; `sweep` and `walk-forward` try many settings.",
    invoke_without_command=True,
    pretty_exceptions_show_locals=False,
)


def _settings(config: Path | None) -> BacktestConfig:
    from autotrade.backtest.config import load_config

    try:
        return load_config(_existing_file(config, "--config") if config is not None else None)
    except typer.BadParameter:
        raise
    except (ValueError, OSError) as exc:  # pydantic's ValidationError and TOML/JSON errors are ValueErrors
        raise typer.BadParameter(f"{config}: {exc}", param_hint="--config") from None


def _market(
    bars: Path | None,
    scans: Path | None,
    minutes: Path | None,
    synthetic: tuple[int, int] | None,
    seed: int,
    settings: BacktestConfig,
) -> tuple[MarketData, str]:
    """The market of the command's inputs (files or a synthetic market) and a line describing it."""
    from_files = bars is not None or scans is not None or minutes is not None
    if synthetic is not None and from_files:
        raise typer.BadParameter(
            "give either --bars and --scans or --synthetic, not both", param_hint="--synthetic"
        )
    if synthetic is None and not from_files:
        raise typer.BadParameter("give --bars and --scans, or --synthetic STOCKS YEARS", param_hint="--bars")

    from autotrade.backtest.data import MarketData, read_plain_csv

    # Pandas is imported only when needed: a synthetic market and plain standard CSV files do without it.
    if synthetic is not None:
        from autotrade.backtest.synthetic import synthetic_market

        stocks, years = synthetic
        if stocks <= 0 or years <= 0:
            raise typer.BadParameter("STOCKS and YEARS must be positive", param_hint="--synthetic")
        try:
            market = synthetic_market(stocks, years, seed, use_krx_calendar=settings.use_krx_calendar)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--synthetic") from None
        return market, f"synthetic market: {stocks} stocks x {years} years, seed {seed}"
    else:
        if bars is None:
            raise typer.BadParameter("--scans needs --bars", param_hint="--bars")
        if scans is None:
            raise typer.BadParameter("--bars needs --scans", param_hint="--scans")
        source = f"bars {bars}, scans {scans}"
        if minutes is None and bars.is_file() and scans.is_file():
            try:
                plain = read_plain_csv(bars, scans, use_krx_calendar=settings.use_krx_calendar)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="--bars/--scans") from None
            if plain is not None:
                return plain, source
        bar_frame = _read_bars(bars)
        scan_frame = _read(scans, "--scans")
        minute_frame = _read(minutes, "--minutes") if minutes is not None else None

    try:
        data = MarketData.from_frames(
            bar_frame, scan_frame, minute_frame, use_krx_calendar=settings.use_krx_calendar
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--bars/--scans") from None
    return data, source


def _out_dir(out: Path | None) -> Path:
    if out is None:
        raise typer.BadParameter("--out is required", param_hint="--out")
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} exists and is not a directory", param_hint="--out")
    return out


@backtest_app.callback(invoke_without_command=True)
def backtest(
    ctx: typer.Context,
    bars: Path | None = typer.Option(None, "--bars", help=BARS_HELP),
    scans: Path | None = typer.Option(None, "--scans", help=SCANS_HELP),
    out: Path | None = typer.Option(
        None, "--out", help="Directory for trades.csv, metrics.json, charts, report (required)."
    ),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    synthetic: tuple[int, int] | None = typer.Option(
        None, "--synthetic", metavar="STOCKS YEARS", help=SYNTHETIC_HELP
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic market."),
    minutes: Path | None = typer.Option(None, "--minutes", help=MINUTES_HELP),
    progress: bool | None = typer.Option(
        None, "--progress/--no-progress", help="Progress bar on stderr (default: when stderr is a terminal)."
    ),
    report: bool = typer.Option(
        False,
        "--report/--no-report",
        help="Also draw the equity and drawdown charts and the HTML report (about a second more: "
        "matplotlib); the CSV and JSON files are always written.",
    ),
) -> None:
    """Backtest the strategy (same signal, risk and exit code as live trading) and write its reports."""
    if ctx.invoked_subcommand is not None:
        return
    out = _out_dir(out)
    # Forked once numpy (which both need) is loaded: the child imports matplotlib while this process loads
    # the data and runs.
    import numpy  # noqa: F401

    from autotrade.backtest.report import ReportProcess, write_outputs

    with ReportProcess() if report else nullcontext() as drawer:
        settings = _settings(config)
        data, source = _market(bars, scans, minutes, synthetic, seed, settings)

        from autotrade.backtest.engine import run_backtest

        show = sys.stderr.isatty() if progress is None else progress
        result = run_backtest(data, settings, progress=show)
        paths, metrics = write_outputs(result, out, charts=report, drawer=drawer)

    typer.echo(f"backtest of {source}")
    typer.echo(
        f"{metrics['first_day']} .. {metrics['last_day']}: {metrics['trading_days']:,} trading days, "
        f"{metrics['bars']:,} bars, {metrics['stocks']:,} stocks (calendar {metrics['calendar']})"
    )
    typer.echo(
        f"trades {metrics['trades']:,}  win rate {_percent(metrics['win_rate'])}  "
        f"stop-trigger rate {_percent(metrics['stop_trigger_rate'])}  "
        f"total return {_percent(metrics['total_return'])}  max drawdown {_percent(metrics['max_drawdown'])}"
    )
    typer.echo(f"fees {metrics['fees_paid']:,} KRW  sell tax {metrics['taxes_paid']:,} KRW")
    written = [paths.trades, paths.positions, paths.equity, paths.metrics]
    if report:
        written += [paths.equity_chart, paths.drawdown_chart, paths.report]
    typer.echo(f"wrote {', '.join(p.name for p in written)} to {out}")
    if not report:
        typer.echo("charts and HTML report: run again with --report")


def _points(
    params: list[str], random: int | None, sample_seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from autotrade.backtest.sweep import grid, parse_spec, random_points

    space: dict[str, Any] = {}
    try:
        for spec in params:
            name, values = parse_spec(spec)
            space[name] = values
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--param") from None
    if not space:
        raise typer.BadParameter("give at least one --param NAME=v1,v2 or NAME=lo:hi", param_hint="--param")
    if random is None:
        ranges = [name for name, v in space.items() if isinstance(v, tuple)]
        if ranges:
            raise typer.BadParameter(
                f"{', '.join(ranges)}: a lo:hi range needs --random N", param_hint="--param"
            )
        return grid(space), space
    if random <= 0:
        raise typer.BadParameter("N must be positive", param_hint="--random")
    return random_points(space, random, sample_seed), space


def _objective(objective: str) -> str:
    from autotrade.backtest.sweep import OBJECTIVES

    if objective not in OBJECTIVES:
        raise typer.BadParameter(f"one of {', '.join(OBJECTIVES)}", param_hint="--objective")
    return objective


PARAM_HELP = (
    "NAME=v1,v2,... (values) or NAME=lo:hi (a range, with --random); repeatable. NAME: stop_loss_rate, "
    "preserve_rate, take_profit_rate, min_ai_score, max_per_stock, max_holding_days."
)


@backtest_app.command("sweep")
def sweep(
    param: list[str] = typer.Option([], "--param", help=PARAM_HELP),
    out: Path = typer.Option(..., "--out", help="Directory for sweep.csv, sweep.parquet, sweep.html."),
    bars: Path | None = typer.Option(None, "--bars", help=BARS_HELP),
    scans: Path | None = typer.Option(None, "--scans", help=SCANS_HELP),
    config: Path | None = typer.Option(None, "--config", help="Base settings (TOML/JSON) the points vary."),
    synthetic: tuple[int, int] | None = typer.Option(
        None, "--synthetic", metavar="STOCKS YEARS", help=SYNTHETIC_HELP
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic market."),
    minutes: Path | None = typer.Option(None, "--minutes", help=MINUTES_HELP),
    random: int | None = typer.Option(
        None, "--random", metavar="N", help="N seeded random points instead of the full grid."
    ),
    sample_seed: int = typer.Option(0, "--sample-seed", help="Seed of the random points."),
    workers: int = typer.Option(0, "--workers", help="Processes (0: one per core; 1: in this process)."),
    dask_address: str | None = typer.Option(
        None,
        "--dask-address",
        envvar="AUTOTRADE_DASK_ADDRESS",
        metavar="tcp://HOST:PORT",
        help="Run the configurations as Prefect tasks on this Dask scheduler's workers (not --workers).",
    ),
    objective: str = typer.Option("sharpe", "--objective", help="Metric to rank and colour the heat map by."),
    heatmap: str | None = typer.Option(
        None, "--heatmap", metavar="X,Y", help="The heat map's two parameters (default: the first two swept)."
    ),
) -> None:
    """Run every point of a grid (or a seeded random sample) of settings; table, heat map and ranking."""
    out = _out_dir(out)
    objective = _objective(objective)
    points, space = _points(param, random, sample_seed)
    axes = [a.strip() for a in heatmap.split(",")] if heatmap else [p for p in space][:2]
    from autotrade.backtest.sweep import PARAMETERS

    if heatmap and (len(axes) != 2 or any(a not in PARAMETERS for a in axes)):
        raise typer.BadParameter("two parameter names, X,Y", param_hint="--heatmap")
    settings = _settings(config)
    data, source = _market(bars, scans, minutes, synthetic, seed, settings)

    from autotrade.backtest.sweep import heatmap_png, report_html, run_sweep, write_table
    from autotrade.config import usable_cores

    n_workers = workers if workers > 0 else usable_cores()
    if dask_address:
        typer.echo(f"running {len(points)} configuration(s) on the Dask scheduler at {dask_address}")
    try:
        rows = run_sweep(data, settings, points, workers=n_workers, dask_address=dask_address or None)
    except OSError as exc:  # the scheduler cannot be reached (distributed raises OSError on a timeout)
        raise typer.BadParameter(f"{dask_address}: {exc}", param_hint="--dask-address") from None
    out.mkdir(parents=True, exist_ok=True)
    write_table(rows, out / "sweep.csv", out / "sweep.parquet")
    picture = heatmap_png(rows, axes[0], axes[1], objective) if len(axes) == 2 else None
    if picture is not None:
        (out / "heatmap.png").write_bytes(picture)
    title = f"Sweep of {len(rows)} configurations"
    (out / "sweep.html").write_text(report_html(rows, objective, picture, title, source), encoding="utf-8")
    from autotrade.backtest.sweep import objective_value

    valid = [r for r in rows if not r["error"]]
    typer.echo(f"sweep of {len(rows)} configuration(s) ({len(rows) - len(valid)} invalid) on {source}")
    if valid:
        best = max(valid, key=lambda r: (objective_value(r, objective), -r["run"]))
        shown = ", ".join(f"{p}={best[p]}" for p in PARAMETERS if p in space)
        typer.echo(f"best {objective}: run {best['run']} ({shown}): {best.get(objective)}")
    typer.echo(f"wrote sweep.csv, sweep.parquet, {'heatmap.png, ' if picture else ''}sweep.html to {out}")


@backtest_app.command("walk-forward")
def walk_forward_command(
    param: list[str] = typer.Option([], "--param", help=PARAM_HELP),
    out: Path = typer.Option(..., "--out", help="Directory for walkforward.csv and walkforward.html."),
    in_days: int = typer.Option(250, "--in-days", help="In-sample trading days of each window."),
    out_days: int = typer.Option(60, "--out-days", help="Out-of-sample trading days (and the step)."),
    bars: Path | None = typer.Option(None, "--bars", help=BARS_HELP),
    scans: Path | None = typer.Option(None, "--scans", help=SCANS_HELP),
    config: Path | None = typer.Option(None, "--config", help="Default settings, also the points' base."),
    synthetic: tuple[int, int] | None = typer.Option(
        None, "--synthetic", metavar="STOCKS YEARS", help=SYNTHETIC_HELP
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic market."),
    minutes: Path | None = typer.Option(None, "--minutes", help=MINUTES_HELP),
    random: int | None = typer.Option(None, "--random", metavar="N", help="N seeded random points."),
    sample_seed: int = typer.Option(0, "--sample-seed", help="Seed of the random points."),
    workers: int = typer.Option(0, "--workers", help="Processes (0: one per core; 1: in this process)."),
    objective: str = typer.Option("sharpe", "--objective", help="In-sample metric the choice maximises."),
) -> None:
    """Choose settings on rolling in-sample windows; report out-of-sample results next to the defaults."""
    out = _out_dir(out)
    objective = _objective(objective)
    points, _ = _points(param, random, sample_seed)
    settings = _settings(config)
    data, source = _market(bars, scans, minutes, synthetic, seed, settings)

    from autotrade.backtest.sweep import write_table
    from autotrade.backtest.walkforward import report_html, walk_forward
    from autotrade.config import usable_cores

    try:
        wf = walk_forward(
            data,
            settings,
            points,
            in_days=in_days,
            out_days=out_days,
            objective=objective,
            workers=workers if workers > 0 else usable_cores(),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--in-days/--out-days") from None
    rows = wf.rows(data.days)
    out.mkdir(parents=True, exist_ok=True)
    write_table(rows, out / "walkforward.csv")
    (out / "walkforward.html").write_text(report_html(wf, rows, source, in_days, out_days), encoding="utf-8")
    typer.echo(f"walk-forward over {len(wf.results)} window(s) on {source}, choosing by {objective}")
    typer.echo(
        f"out-of-sample compounded return: tuned {_percent(wf.compounded('tuned'))}, "
        f"default {_percent(wf.compounded('default'))}"
    )
    typer.echo(f"wrote walkforward.csv, walkforward.html to {out}")
