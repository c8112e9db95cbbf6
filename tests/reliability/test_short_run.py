"""A short run of the reliability scenario in the suite (the month is ``bench/faults.py``): broker faults of
every kind at 5% (WebSocket disconnects included) and crashes at every point of the order protocol, through
the vault's gateway, on SQLite and PostgreSQL; afterwards no order is duplicated or lost, the broker and the
database agree, limits hold, tiers follow the prices, the price feed reconnected and kept delivering, the
gateway refused none of the product's own requests, and no secret is in the database or the logs."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.scenario import FAULT_KINDS, run


async def test_faults_and_crashes_lose_nothing_and_double_nothing(db_url: str, tmp_path: Path) -> None:
    r = await run(users=3, days=3, fault_rate=0.05, crash_rate=0.05, seed=5, db_url=db_url, work=tmp_path)
    assert set(r["faults_injected"]) == set(FAULT_KINDS), r["faults_injected"]
    assert r["crash_points_covered"] == [
        "after_ack",
        "after_broker_call",
        "after_submitting",
        "before_submitting",
    ]
    assert r["orders_placed"] > 20 and r["orders_placed"] == r["broker_orders"]
    assert (r["orders_duplicated"], r["orders_lost"]) == (0, 0), r["lost"]
    assert r["mismatches"] == 0, r["problems"]
    # Every account was reached through the gateway, which refused nothing the product asked for.
    assert r["access"] == "gateway" and r["access_log_rows"] > 0
    refusals = (r["access_refused"], r["security_events"], r["keys_not_active"])
    assert refusals == (0, {}, 0), r["access_refusals"]
    # The feed delivered ticks. (Whether a random drop lands inside a session, with ticks after it, depends on
    # timing; tests/broker/test_feed_fallback.py and tests/sim/test_contract.py drop the feed on purpose and
    # check that it returns and goes on delivering.)
    assert r["feed_ticks"] > 0
    # No app key, secret or broker token in any table (the access log and security events included) or log.
    assert (r["leaks_in_database"], r["leaks_in_logs"], r["leaks"]) == (0, 0, 0)
    assert r["secrets_checked"] >= 9 and r["log_records_scanned"] > 1000
