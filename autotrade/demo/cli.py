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
    _print_web_app(console, data_dir.resolve())
    if json_path is not None:
        write_json(result, json_path)
        say(f"summary written to {json_path}")


DEMO_PASSWORD = "demo-password-1"  # noqa: S105 - the demo's throw-away database only; printed for a person to log in


def _print_web_app(console: object, data_dir: Path) -> None:
    """Give the demo's users web logins (userNNN@demo.local, and an operator ops@demo.local), all with
    DEMO_PASSWORD, and print how to open the web app over the demo's database (the simulator has stopped:
    the pages show the positions, orders, trades and equity the run left, without current prices)."""
    import sqlalchemy as sa
    from rich.console import Console

    from autotrade.api.auth import hash_password
    from autotrade.api.users import create_operator
    from autotrade.api.web import web_dir
    from autotrade.store.db import Database
    from autotrade.store.models import User

    assert isinstance(console, Console)  # noqa: S101 - narrowing
    db = Database(f"sqlite:///{data_dir / 'autotrade.db'}")
    try:
        password_hash = hash_password(DEMO_PASSWORD)
        with db.unit_of_work() as s:
            users = s.scalars(sa.select(User).where(User.email.is_(None)).order_by(User.user_id)).all()
            for u in users:
                u.email, u.password_hash = f"{u.user_id}@demo.local", password_hash
            first = users[0].email if users else None
        create_operator(db, "ops@demo.local", DEMO_PASSWORD)
    finally:
        db.dispose()
    env = (f"AUTOTRADE_HOME={data_dir} AUTOTRADE_DATABASE_URL=sqlite:///{data_dir / 'autotrade.db'} "
           f"AUTOTRADE_LOCAL_MASTER_KEY_PATH={data_dir / 'keys' / 'master.key'}")  # fmt: skip
    console.print("[bold]web app[/bold] over the demo's data: start it with")
    console.print(f"  {env} .venv/bin/autotrade api serve", soft_wrap=True)
    if (web_dir() / "index.html").is_file():
        console.print("  then open http://127.0.0.1:8000/ and log in as "
                      f"{first or 'user001@demo.local'} (a trader) or ops@demo.local (an operator), "
                      f"password {DEMO_PASSWORD}", soft_wrap=True)  # fmt: skip
    else:
        console.print("  (the web app is not built: `make install` builds web/out; it needs Node 18+)")


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
