"""A process that trades, as a Prefect worker's flow run does: an evening of buys and a morning's watch over
the simulator through the vault's gateway, its metrics written to a folder (autotrade/ops/worker_metrics.py).
Prints the watch's result.

    python -m tests.ops.metrics_worker DATABASE_URL METRICS_FOLDER WORK_FOLDER
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import date, datetime, time
from pathlib import Path

from autotrade.domain.krx import KST
from autotrade.ops.worker_metrics import enable
from autotrade.sim.server import running_simulator
from tests.trading.harness import Trader, make_world

D1, D2 = date(2026, 11, 23), date(2026, 11, 24)
STOCKS = {"100000": 4_150, "100010": 8_900, "100020": 12_350, "100030": 23_400, "100040": 48_750}
TRADERS = [
    Trader("kim", "5001000011", 50_000_000, 5_000_000),
    Trader("lee", "5001000022", 9_000_000, 3_000_000),
]


async def main(db_url: str, folder: Path, work: Path) -> dict[str, object]:
    start = datetime.combine(D1, time(15, 0), tzinfo=KST)
    with running_simulator(seed=7, start=start, volatility=0.003, after_hours_fill_rate=0.8) as sim:
        sim.admin.add_stocks([{"code": c, "name": c, "prev_close": p} for c, p in STOCKS.items()])
        w = make_world(
            sim, db_url, work, TRADERS, access="gateway", max_stock_count=4, max_per_stock=1_000_000
        )  # the accounts through the vault's gateway, as in production
        enable(folder, w.db, sim.engine.now)  # what build_runtime does in a worker's flow run process
        try:
            await w.evening(D1, w.scan_for(list(STOCKS), [9.5, 9.1, 8.7, 8.2, 7.5]))
            return await w.trading_session(D2, until=time(10, 0))
        finally:
            await w.aclose()


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))
    print(json.dumps(result))  # the response times reach the database at exit (atexit)
