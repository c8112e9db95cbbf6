"""The short reliability run with stops resting at the broker (``bench/faults.py --resting-stops``):
broker faults of every kind at 5% and crashes at every point of the order protocol, through the gateway,
on SQLite and PostgreSQL. Resting stops are placed and some fill at the broker; still no order is
duplicated or lost, the broker and the database agree, no stop or take-profit crossed on the simulator's
price path goes unsold that day, no protective sell is left unsent, and no key is disabled."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.scenario import run


async def test_faults_and_crashes_with_resting_stops(db_url: str, tmp_path: Path) -> None:
    r = await run(users=3, days=3, fault_rate=0.05, crash_rate=0.05, seed=3, db_url=db_url, work=tmp_path,
                  resting_stops=True)  # fmt: skip
    assert r["resting_stops"] and r["resting_stops_placed"] > 0 and r["resting_stop_fills"] > 0
    assert r["orders_placed"] > 20 and r["orders_placed"] == r["broker_orders"]
    assert (r["orders_duplicated"], r["orders_lost"]) == (0, 0), r["lost"]
    assert r["mismatches"] == 0, r["problems"]
    assert (r["exits_missed"], r["sells_not_sent"]) == (0, 0), r["exits_missed_detail"]
    assert (r["keys_wrongly_disabled"], r["access_refused"], r["leaks"]) == (0, 0, 0)
