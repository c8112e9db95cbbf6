"""A short run of the reliability scenario in the suite (the month is ``bench/faults.py``): broker faults of
every kind at 5% and crashes at every point of the order protocol, on SQLite and PostgreSQL; afterwards no
order is duplicated or lost, the broker and the database agree, limits hold, tiers follow the prices and
no secret is in the database."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.scenario import FAULT_KINDS, run


async def test_faults_and_crashes_lose_nothing_and_double_nothing(db_url: str, tmp_path: Path) -> None:
    r = await run(users=3, days=3, fault_rate=0.05, crash_rate=0.05, seed=3, db_url=db_url, work=tmp_path)
    assert set(r["faults_injected"]) == set(FAULT_KINDS), r["faults_injected"]
    assert r["crash_points_covered"] == [
        "after_ack",
        "after_broker_call",
        "after_submitting",
        "before_submitting",
    ]
    assert r["orders_placed"] > 20 and r["orders_placed"] == r["broker_orders"]
    assert (r["orders_duplicated"], r["orders_lost"], r["leaks"]) == (0, 0, 0), r["lost"]
    assert r["mismatches"] == 0, r["problems"]
    assert r["secrets_checked"] >= 9
