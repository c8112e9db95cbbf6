"""The operator's Prefect links read from a real Prefect server (the test harness's): each deployment's page
and its last run, which is the newest run due by now, never one the schedule has set for later."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from prefect.states import Scheduled

from autotrade.api.ops import prefect_links


async def test_the_last_run_is_the_newest_due(prefect_server: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with get_client(sync_client=True) as prefect:
        flow_id = prefect.create_flow_from_name("evening_signal_and_buy")
        dep_id = prefect.create_deployment(flow_id, "evening")
        due = prefect.create_flow_run_from_deployment(dep_id, state=Scheduled())
        later = datetime.now(UTC) + timedelta(days=3)
        prefect.create_flow_run_from_deployment(dep_id, state=Scheduled(scheduled_time=later))
    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))
    monkeypatch.delenv("PREFECT_UI_URL", raising=False)
    out = await prefect_links(wait=20)
    evening = next(d for d in out.deployments if d.name == "evening_signal_and_buy/evening")
    assert out.ui_url and evening.url == f"{out.ui_url}/deployments/deployment/{dep_id}"
    assert evening.last_run_url == f"{out.ui_url}/runs/flow-run/{due.id}"
    assert evening.last_run_state == "Scheduled"
