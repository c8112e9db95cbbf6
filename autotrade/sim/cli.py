"""``autotrade sim serve``: the Kiwoom-protocol simulator in the foreground."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from autotrade.sim.market import MarketEngine

sim_app = typer.Typer(
    help="The Kiwoom-protocol simulator (paper trading, demo, tests).", no_args_is_help=True
)


@sim_app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (keep it on loopback)."),
    port: int = typer.Option(8765, min=1, max=65535),
    seed: int = typer.Option(1, help="Seed of the price paths and of fault injection."),
    speed: float = typer.Option(
        0.0,
        min=0,
        help="Virtual seconds per wall second (0: the clock moves only when told through /_sim/clock).",
    ),
    data: Path | None = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        help="CSV of stocks (code,name,prev_close) or of daily bars to replay (date,code,open,high,low,close"
        "[,name]); either replaces the seeded universe.",
    ),
    stocks: int = typer.Option(50, min=1, help="How many seeded stocks when no --data is given."),
    start: str | None = typer.Option(
        None, help="Virtual start, ISO 8601 with offset (default: now in Seoul), e.g. 2026-11-24T15:40+09:00."
    ),
    admin_token: str | None = typer.Option(
        None, envvar="AUTOTRADE_SIM_ADMIN_TOKEN", help="When set, /_sim/ needs it in X-Sim-Admin-Token."
    ),
) -> None:
    """Serve Kiwoom's REST and WebSocket protocol on HOST:PORT, with the admin API under /_sim/."""
    from datetime import datetime

    import uvicorn

    from autotrade.sim.app import create_app
    from autotrade.sim.server import build
    from autotrade.sim.universe import seed_universe

    try:
        begin = datetime.fromisoformat(start) if start else None
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {start}", param_hint="--start") from None
    if begin is not None and begin.tzinfo is None:
        raise typer.BadParameter("give the offset too, e.g. +09:00", param_hint="--start")
    sim = build(seed, speed, start=begin)
    sim.admin_token = admin_token or None
    if data is not None:
        try:
            replayed = _load_data(sim.engine, data)
        except (KeyError, ValueError) as exc:
            raise typer.BadParameter(f"{data}: {exc}", param_hint="--data") from None
        if replayed:
            typer.echo(f"replaying {replayed:,} daily bars from {data}")
    else:
        seed_universe(sim.engine, stocks, seed)
    typer.echo(
        f"Kiwoom simulator on http://{host}:{port} (ws://{host}:{port}/api/dostk/websocket), "
        f"{len(sim.engine.stocks)} stocks, clock {sim.engine.now():%Y-%m-%d %H:%M} KST, admin under /_sim/"
    )
    uvicorn.run(
        create_app(sim), host=host, port=port, loop="uvloop", http="httptools", log_level="warning",
        timeout_keep_alive=30,
    )  # fmt: skip


def _load_data(engine: MarketEngine, path: Path) -> int:
    """Stocks from a stock list, or stocks and their bars from a bar file; returns the bars loaded."""
    from datetime import date

    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError("no rows")
    if "open" not in rows[0]:
        for row in rows:
            engine.add_stock(row["code"].strip(), row["name"], int(row["prev_close"]))
        return 0
    bars = sorted(
        (date.fromisoformat(r["date"].strip()), r["code"].strip().zfill(6), int(r["open"]), int(r["high"]),
         int(r["low"]), int(r["close"]), (r.get("name") or "").strip())
        for r in rows
    )  # fmt: skip
    for _day, code, o, *_rest, name in bars:
        if code not in engine.stocks:
            engine.add_stock(code, name or code, o)  # the first bar's open stands in for the previous close
    return engine.load_bars(b[:6] for b in bars)


if __name__ == "__main__":
    sim_app()
