"""``autotrade demo``: the product end to end on the embedded defaults, with a temporary Prefect server."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import typer

MARKER = ".autotrade-demo"


def demo(
    days: int = typer.Option(5, min=2, max=30, help="Trading days to simulate (the first only buys)."),
    users: int = typer.Option(5, min=1, max=500, help="Simulated users, each with a Kiwoom account."),
    seed: int = typer.Option(7, help="Seed of the market and the scans."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the summary as JSON here."),
    data_dir: Path = typer.Option(Path("var/demo"), help="Working folder (wiped at the start of each demo)."),
    speed: float = typer.Option(
        3600.0, min=60, help="Virtual seconds per wall second while markets are open."
    ),
) -> None:
    """Run DAYS trading days for USERS users through the real flows, printing a summary per day."""
    _prepare(data_dir)
    os.environ.setdefault("PREFECT_HOME", str(Path("var/prefect").resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from rich.console import Console

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    say = console.print
    say("[bold]autotrade demo[/bold]: starting a temporary Prefect server ...")
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = SubprocessASGIServer()
    server.start(timeout=90)
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            say(f"Prefect UI while the demo runs: {server.address} (flow runs are kept in "
                f"{os.environ['PREFECT_HOME']})")  # fmt: skip
            from autotrade.demo.run import run_demo, write_json

            result = asyncio.run(
                run_demo(
                    days=days,
                    users=users,
                    seed=seed,
                    data_dir=data_dir,
                    say=say,
                    prefect_ui=server.address,
                    speed=speed,
                )
            )
    finally:
        server.stop()
    _print_summary(console, result)
    if json_path is not None:
        write_json(result, json_path)
        say(f"summary written to {json_path}")


def _prepare(data_dir: Path) -> None:
    if data_dir.exists() and any(data_dir.iterdir()):
        if not (data_dir / MARKER).exists():
            raise typer.BadParameter(f"{data_dir} is not empty and was not made by the demo; choose another")
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).write_text("working folder of `autotrade demo`; wiped by the next demo\n")


def _print_summary(console: object, result: object) -> None:
    from rich.console import Console
    from rich.table import Table

    from autotrade.demo.run import DemoResult

    assert isinstance(console, Console) and isinstance(result, DemoResult)  # noqa: S101 - narrowing
    table = Table(title=f"{result.users} users, {len(result.days)} trading days ({result.seconds:.0f} s)")
    for col in ("day", "buy orders", "bought KRW", "exits armed", "stop", "preserve", "take-profit",
                "realized KRW", "equity KRW"):  # fmt: skip
        table.add_column(col, justify="left" if col == "day" else "right")
    for d in result.days:
        cells = (d.buy_orders, f"{d.bought:,}", d.positions_armed, d.stop_loss, d.preserve, d.take_profit,
                 f"{d.realized_pnl:+,}", f"{d.equity:,}")  # fmt: skip
        table.add_row(d.day, *(str(c) for c in cells))
    console.print(table)
    fired = result.tiers_fired
    console.print(f"tiers fired over the run: stop-loss {fired['stop_loss']}, preserve {fired['preserve']}, "
                  f"take-profit {fired['take_profit']}")  # fmt: skip
    last = result.days[-1].report
    console.print(f"reports (HTML with charts): {last or result.data_dir}")
    console.print(f"notifications the users received: {result.notifications}")
    console.print(f"database: {Path(result.data_dir) / 'autotrade.db'}; browse the flow runs later with "
                  "`PREFECT_HOME=var/prefect .venv/bin/prefect server start`")  # fmt: skip
