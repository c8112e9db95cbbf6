"""The operator path with the real Prefect CLI against a real ``prefect server start``: the work pool,
``prefect deploy --all`` from prefect.yaml, the list commands an operator uses, and every deployment on an
Asia/Seoul cron. The Prefect test harness cannot see this: FastAPI 0.151-0.154 passed every harness test
while the CLI's list and deploy routes answered HTTP 422 (a ``limit`` of None) on a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.flows.conftest import free_port, wait_for_prefect_server

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
pytestmark = pytest.mark.prefect_cli


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1", "PREFECT_API_URL": "", "AUTOTRADE_CHECKOUT": str(ROOT),
    }  # fmt: skip
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home,
    )  # fmt: skip
    try:
        wait_for_prefect_server(api, server, home / "server.log", 120)
        yield {**env, "PREFECT_API_URL": api}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _prefect(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [PREFECT, "--no-prompt", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{output}"
    return done.stdout


def test_deploy_all_then_list_with_the_real_cli(prefect_server: dict[str, str]) -> None:
    env = prefect_server
    _prefect(env, "work-pool", "create", "autotrade-process", "--type", "process")
    _prefect(env, "deploy", "--all")
    listed = _prefect(env, "deployment", "ls")
    for command in (("flow-run", "ls"), ("work-pool", "ls"), ("block", "ls")):
        _prefect(env, *command, timeout=60)

    deployments = httpx.post(f"{env['PREFECT_API_URL']}/deployments/filter", json={}, timeout=30).json()
    names = {d["name"] for d in deployments}
    expected = {"evening", "morning", "intraday", "daily-report", "backup", "weekly-review", "monthly-review"}
    assert expected <= names
    for flow in ("evening_signal_and_buy", "morning_fill_and_arm", "intraday_reconcile", "daily_report",
                 "weekly_review", "monthly_review"):  # fmt: skip
        assert flow in listed
    assert "place-buys" in names
    for d in deployments:
        crons = [(s["schedule"].get("cron"), s["schedule"].get("timezone")) for s in d["schedules"]]
        active = [s["active"] for s in d["schedules"]]
        if d["name"] == "place-buys":  # started by the evening run, one run per share: its schedule is off
            assert crons == [("40 15 * * 1-5", "Asia/Seoul")] and active == [False]
            assert d["work_pool_name"] == "autotrade-process"
            continue
        assert crons and all(active), f"{d['name']} has no active schedule"
        assert all(cron and tz == "Asia/Seoul" for cron, tz in crons), (d["name"], crons)
        assert d["work_pool_name"] == "autotrade-process"
    crons_of = {d["name"]: [s["schedule"]["cron"] for s in d["schedules"]] for d in deployments}
    assert crons_of["evening"] == ["40 15 * * 1-5"]
    assert crons_of["weekly-review"] == ["0 9 * * 6"]  # Saturday 09:00
    assert crons_of["monthly-review"] == ["0 7 1 * *"]  # the 1st, 07:00
