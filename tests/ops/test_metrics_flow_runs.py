"""Flow runs by state on the API's /metrics, read from a real Prefect server (the test harness's): runs of
the day in three states counted by flow name and state type, tomorrow's left out, the read kept 30 s, and a
Prefect that does not answer leaving the counts out with ``autotrade_prefect_up 0``."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from prefect.states import Scheduled
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autotrade.ops.metrics import PrefectCollector
from autotrade.store.db import Database
from tests.api.conftest import Calls, api  # noqa: F401 - the fixture
from tests.ops.test_metrics import _scrape

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def runs_of(m: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["state"]: v for (metric, labels), v in m.items()
            if metric == "autotrade_flow_runs" and dict(labels)["flow"] == name}  # fmt: skip


def test_flow_runs_by_state_are_read_from_prefect(
    prefect_server: None,
    api: tuple[TestClient, Database, Calls],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, _, _ = api
    name = f"metrics-probe-{uuid.uuid4().hex[:8]}"  # the harness is shared: count this test's runs only

    @flow(name=name, persist_result=False)
    def probe(fail: bool = False) -> int:
        if fail:
            raise RuntimeError("failed on purpose")
        return 1

    probe()
    probe()
    assert probe(fail=True, return_state=True).is_failed()
    with get_client(sync_client=True) as prefect:
        made = prefect.create_flow_run(probe, state=Scheduled())  # today's, not started yet
        tomorrow = datetime.now(UTC) + timedelta(days=1, hours=1)
        prefect.create_flow_run(probe, state=Scheduled(scheduled_time=tomorrow))  # not today's
    assert made.id

    api_url = str(PREFECT_API_URL.value())
    monkeypatch.setenv("PREFECT_API_URL", api_url)
    m = _scrape(client)
    assert m[("autotrade_prefect_up", ())] == 1
    assert runs_of(m, name) == {"COMPLETED": 2, "FAILED": 1, "SCHEDULED": 1}, runs_of(m, name)

    probe()  # a third completed run: the next scrape within 30 s answers from what it kept
    assert runs_of(_scrape(client), name)["COMPLETED"] == 2
    fresh = CollectorRegistry()
    fresh.register(PrefectCollector(ttl=0))
    scraped = text_string_to_metric_families(generate_latest(fresh).decode())
    seen = {(s.labels.get("flow"), s.labels.get("state")): s.value for f in scraped for s in f.samples}
    assert seen[(name, "COMPLETED")] == 3 and seen[(name, "FAILED")] == 1

    # Prefect not answering (nothing listens on the port): no counts, prefect_up 0, the scrape stays quick.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{closed}/api")
    asked = time.monotonic()
    m = _scrape(client)
    assert time.monotonic() - asked < 5
    assert m[("autotrade_prefect_up", ())] == 0
    assert not [k for k in m if k[0] == "autotrade_flow_runs"]
    assert ("autotrade_fill_rate", ()) in m  # the ledger's figures are still there
