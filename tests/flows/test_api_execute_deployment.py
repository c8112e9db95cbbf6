"""The operator's execute through a deployment: with ``PREFECT_API_URL`` set, the API's
``POST /api/auto-trading/execute`` starts ``evening_signal_and_buy/evening`` on the Prefect server (the test
harness's), and a serving process (``flow.serve``: each run in a process of its own, as a runner or a process
worker runs it) places the buys on the simulator over HTTP into the test database, SQLite and PostgreSQL.
The API answers 202 with the flow run id before the run has ended (it never waits on a deployment's run),
the run ends Completed with every buy at the broker once; a KRX holiday is answered at once and starts no
run."""

from __future__ import annotations

import asyncio
import inspect
import os
import pickle
import subprocess
import sys
import time as wall
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.settings import PREFECT_API_URL

from autotrade.api.service import DEPLOYMENT
from autotrade.demo.stack import Stack
from autotrade.domain.krx import KST
from autotrade.runtime import ShiftedClock
from autotrade.store.models import OrderIntentRow
from deployments.serve import SCHEDULES
from tests.flows.conftest import DAY1
from tests.flows.test_api_execute_paths import client_of, counts, operator, scan_of

pytestmark = pytest.mark.timeout(240)
ROOT = Path(__file__).resolve().parents[2]
HOLIDAY = date(2026, 12, 25)  # Christmas, a KRX holiday (a Friday)
# The served runs' clock: 25 s before the after-hours session ends, so a run places its buys, waits for the
# session's end (the flow's collect_fills) and ends within the test's minute.
RUN_CLOCK_START = datetime.combine(DAY1, time(15, 59, 35), tzinfo=KST)


def serve(stack: Stack, api_url: str, folder: Path) -> subprocess.Popen[bytes]:
    runtime = folder / "runtime.pickle"
    runtime.write_bytes(pickle.dumps((stack.runtime.settings, ShiftedClock.starting_at(RUN_CLOCK_START))))
    env = {**os.environ, "PREFECT_API_URL": api_url, "AUTOTRADE_TEST_RUNTIME": str(runtime),
           "PREFECT_RUNNER_POLL_FREQUENCY": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "COLUMNS": "200"}  # fmt: skip
    log = (folder / "runner.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.flows.deployment_runner"], env=env, cwd=ROOT, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


async def served(process: subprocess.Popen[bytes], log: Path, seconds: float = 90) -> None:
    deadline = wall.monotonic() + seconds
    while "being served" not in (text := await asyncio.to_thread(log.read_text, errors="replace")):
        assert process.poll() is None, text[-3000:]
        assert wall.monotonic() < deadline, "the runner did not start serving"
        await asyncio.sleep(0.3)


async def runs_of_deployment() -> list[Any]:
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(DEPLOYMENT)
        return await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        )


async def final_state(run_id: str, seconds: float = 150) -> Any:
    async with get_client() as client:
        deadline = wall.monotonic() + seconds
        while wall.monotonic() < deadline:
            run = await client.read_flow_run(run_id)  # type: ignore[arg-type]
            if run.state is not None and run.state.is_final():
                return run
            await asyncio.sleep(0.5)
    raise AssertionError(f"flow run {run_id} did not end in {seconds} s")


async def test_execute_runs_the_deployment_and_answers_202_and_a_holiday_at_once(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api_url = str(PREFECT_API_URL.value())
    assert api_url.startswith("http://127.0.0.1"), api_url  # the harness's server: other processes reach it
    monkeypatch.setenv("PREFECT_API_URL", api_url)  # the API's deployment mode
    monkeypatch.setenv("AUTOTRADE_API_EXECUTE_WAIT_SECONDS", "60")  # a wait the deployment mode does not use
    stack.at(DAY1, time(15, 40))
    runner = serve(stack, api_url, tmp_path)
    try:
        await served(runner, tmp_path / "runner.log")
        before = {r.id for r in await runs_of_deployment()}
        async with client_of(stack) as client:
            op = await operator(client, stack)
            holiday = {"scan_results": scan_of(stack), "trading_day": HOLIDAY.isoformat()}
            r = await client.post("/api/auto-trading/execute", json=holiday, headers=op)
            assert r.status_code == 200, r.text
            closed = {"success": False, "executed_orders": 0, "total_investment": 0, "strategies_created": 0,
                      "message": f"{HOLIDAY}: not a KRX trading day", "run_id": None}  # fmt: skip
            assert {k: r.json().get(k) for k in closed} == closed, r.json()
            assert {r.id for r in await runs_of_deployment()} == before  # no run started for it

            body = {"scan_results": scan_of(stack), "trading_day": DAY1.isoformat()}
            asked = wall.monotonic()
            r = await client.post("/api/auto-trading/execute", json=body, headers=op)
            answered = wall.monotonic() - asked
        assert r.status_code == 202, r.text
        started = r.json()
        assert started["message"] == "flow run started" and started["success"] is False, started
        assert started["executed_orders"] == 0, started
        async with get_client() as prefect:
            at_answer = await prefect.read_flow_run(started["run_id"])
        assert at_answer.state is not None and not at_answer.state.is_final(), at_answer.state
        assert answered < 30, answered  # not held for the 60 s wait

        run = await final_state(started["run_id"])
        assert run.state.is_completed(), (run.state, (tmp_path / "runner.log").read_text()[-3000:])
        assert {x.id for x in await runs_of_deployment()} - before == {run.id}  # the deployment's run
        assert run.parameters["trading_day"] == DAY1.isoformat() and run.parameters["dry_run"] is False
        api_clock = datetime.combine(DAY1, time(15, 40), tzinfo=KST)  # the API's clock: the simulator's
        assert run.parameters["scan_payload"]["generated_at"] == api_clock.isoformat()
        # The buys: 3 stocks for each of 2 users, each intent sent to the broker once and at the broker.
        intents, sent, signals = counts(stack)
        assert intents == sent == 6 and signals > 0, (intents, sent, signals)
        with stack.db.unit_of_work() as s:
            placed = sorted(s.scalars(sa.select(OrderIntentRow.order_no)).all())
            days = set(s.scalars(sa.select(OrderIntentRow.trading_day)).all())
        assert days == {DAY1}
        assert placed == sorted(stack.sim.engine.orders), placed
        # and this process sent none of them: the served run did (its log names the flow run)
        assert str(run.id) in (tmp_path / "runner.log").read_text(errors="replace")
    finally:
        runner.terminate()
        try:
            runner.wait(timeout=30)
        except subprocess.TimeoutExpired:
            runner.kill()


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_served_flow_validates_its_parameters_in_a_run_process(name: str) -> None:
    """A served run's process gets the flow by value (cloudpickle), as ``run_flow_in_subprocess`` sends it:
    Prefect must still validate its parameters (the scheduled run's none included). With the parameters'
    types left as names (``from __future__ import annotations``) every run of the evening, morning,
    intraday, daily-report and weekly-review deployments failed before it started."""
    flow = pickle.loads(cloudpickle.dumps(SCHEDULES[name][0]))  # noqa: S301 - our own bytes
    assert isinstance(flow.validate_parameters({}), dict)
    if "trading_day" in inspect.signature(flow.fn).parameters:
        assert flow.validate_parameters({"trading_day": "2026-11-18"})["trading_day"] == DAY1
