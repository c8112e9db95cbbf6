"""What a process that trades records is visible through the API's /metrics: another process runs an evening
of buys and a morning's price watch over the simulator (real HTTP and WebSocket), writing its metrics to a
folder; the API scrapes that folder. The figures are checked against the ledger and the watch's own count,
and the broker's response times against the table the daily report's average is computed from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from autotrade.config import get_settings
from autotrade.domain.models import Side
from autotrade.report.indicators import operating_indicators
from autotrade.store.db import Database
from autotrade.store.models import AccessLog, BrokerLatency, OrderIntentRow
from tests.api.conftest import Calls, api  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]


def test_a_workers_metrics_reach_the_apis_scrape(
    api: tuple[TestClient, Database, Calls],  # noqa: F811
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, db, _ = api
    folder = tmp_path / "metrics"
    env = {**os.environ, "AUTOTRADE_HOME": str(tmp_path), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1"}  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    run = subprocess.run(
        [sys.executable, "-m", "tests.ops.metrics_worker", db_url, str(folder), str(tmp_path / "work")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    watch = json.loads(run.stdout.strip().splitlines()[-1])

    monkeypatch.setenv("AUTOTRADE_METRICS_DIR", str(folder))
    get_settings.cache_clear()
    try:
        r = client.get("/metrics")
    finally:
        get_settings.cache_clear()
    assert r.status_code == 200
    m = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }
    with db.unit_of_work() as s:
        buys = s.scalar(sa.select(sa.func.count()).select_from(OrderIntentRow).where(
            OrderIntentRow.side == Side.BUY, OrderIntentRow.order_no.is_not(None)))  # fmt: skip
        saved = s.execute(
            sa.select(
                sa.func.sum(BrokerLatency.calls),
                sa.func.max(BrokerLatency.max_ms),
                sa.func.sum(BrokerLatency.total_ms),
            )
        ).one()
        admitted = s.scalar(
            sa.select(sa.func.count())
            .select_from(AccessLog)
            .where(AccessLog.action == "order:buy", AccessLog.allowed.is_(True))
        )
    assert buys and buys > 0
    # Every buy that reached the broker is one kt10000 call answered return_code 0, and one timed call.
    assert m[("autotrade_broker_responses_total", (("api_id", "kt10000"), ("return_code", "0")))] == buys
    assert m[("autotrade_broker_request_seconds_count", (("api_id", "kt10000"),))] == buys
    inf = m[("autotrade_broker_request_seconds_bucket", (("api_id", "kt10000"), ("le", "+Inf")))]
    assert inf == buys and m[("autotrade_broker_request_seconds_sum", (("api_id", "kt10000"),))] > 0
    # (No token call here: the gateway issued each account's broker token at registration, before the
    # process named its metrics folder, and reads it from the sealed cache since.)
    # Every buy request through the gateway was checked once, timed apart from the broker call (a buy then
    # refused by the spending check adds a refused row of its own, untimed).
    gate = m[("autotrade_gateway_admit_seconds_count", (("action", "order:buy"), ("allowed", "true")))]
    assert gate == admitted and admitted >= buys
    # Each tick the watch read went through the lag histogram once.
    assert watch["ticks"] > 0
    assert m[("autotrade_tick_lag_seconds_count", ())] == watch["ticks"]
    assert (
        m.get(("autotrade_exit_tier_fired_total", (("tier", "STOP_LOSS"),)), 0)
        + m.get(("autotrade_exit_tier_fired_total", (("tier", "PRESERVE"),)), 0)
        + m.get(("autotrade_exit_tier_fired_total", (("tier", "TAKE_PROFIT"),)), 0)
        == watch["sells_fired"]
    )
    # The same calls, added up in the database for the daily report (every answered call, on both days).
    answered = sum(
        v for (name, labels), v in m.items()
        if name == "autotrade_broker_responses_total" and ("return_code", "transport") not in labels
    )  # fmt: skip
    assert saved[0] == answered
    evening = {i.name: i for i in operating_indicators(db, date(2026, 11, 23))}[
        "average broker response time"
    ]
    # Answers from the simulator next door take well under a millisecond each: summed unrounded, they still
    # add up to time spent (each rounded to whole milliseconds, they added up to 0).
    assert saved[2] > 0
    assert evening.value is not None and 0 <= evening.value < 2.0 and evening.met is True


_LIVE = """
import sys, time
from pathlib import Path
from autotrade.ops.worker_metrics import enable, observe_broker
enable(Path(sys.argv[1]))
for _ in range(3):
    observe_broker("kt10000", "0", 0.01)
print("counted", flush=True)
time.sleep(60)
"""


def test_a_live_processs_counts_reach_the_folder_within_seconds_and_stay_when_it_is_killed(
    tmp_path: Path,
) -> None:
    """Counts add up in the process's memory and reach its files every WRITE_SECONDS: a scrape sees a
    process that is still running, and what was written stays when the process is killed (no exit hook)."""
    import time

    from autotrade.ops.worker_metrics import WRITE_SECONDS, folder_collector

    folder = tmp_path / "metrics"
    proc = subprocess.Popen(
        [sys.executable, "-c", _LIVE, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "counted"

        def answered() -> float:
            for family in folder_collector(folder).collect():
                for sample in family.samples:
                    if sample.name == "autotrade_broker_responses_total":
                        return sample.value
            return 0.0

        deadline = time.monotonic() + WRITE_SECONDS + 10
        while answered() < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answered() == 3 and proc.poll() is None
        proc.kill()
        proc.wait(10)
        assert answered() == 3
    finally:
        proc.kill()
        proc.wait(10)
