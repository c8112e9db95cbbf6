"""``deployments/serve.py`` against a real ``prefect server start``: its own deployment names next to the
production ones (``prefect deploy --all``), Ctrl-C stops it, and it pauses only its own schedules; with no
server configured it refuses to start (the temporary in-process server would schedule nothing)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.flows.test_prefect_cli import ROOT, _prefect, prefect_server  # noqa: F401 - the server fixture

pytestmark = pytest.mark.prefect_cli
LOCAL = {"evening-local", "morning-local", "intraday-local", "daily-report-local", "backup-local",
         "weekly-review-local", "monthly-review-local", "place-buys-local"}  # fmt: skip


def _deployments(env: dict[str, str]) -> dict[str, bool]:
    for attempt in range(3):  # a busy machine: the server's SQLite may keep a read waiting
        try:
            found = httpx.post(f"{env['PREFECT_API_URL']}/deployments/filter", json={}, timeout=60).json()
            return {d["name"]: bool(d["paused"]) for d in found}
        except httpx.TimeoutException:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def test_serve_uses_its_own_names_stops_on_ctrl_c_and_pauses_only_its_own(
    prefect_server: dict[str, str],  # noqa: F811
) -> None:
    env = prefect_server
    if "evening" not in _deployments(env):
        _prefect(env, "work-pool", "create", "autotrade-process", "--type", "process", "--overwrite")
        _prefect(env, "deploy", "--all")
    served = subprocess.Popen(
        [sys.executable, "-m", "deployments.serve"], env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not set(_deployments(env)) >= LOCAL:
            assert served.poll() is None, served.stdout.read().decode() if served.stdout else ""
            assert time.monotonic() < deadline, "serve.py did not register its deployments"
            time.sleep(1)
        time.sleep(2)  # the runner is polling now
        served.send_signal(signal.SIGINT)  # Ctrl-C
        assert served.wait(timeout=60) == 0
    finally:
        if served.poll() is None:
            served.kill()
    state = _deployments(env)
    local = {n: p for n, p in state.items() if n.endswith("-local")}
    production = {n: p for n, p in state.items() if not n.endswith("-local")}
    assert set(local) == LOCAL
    assert all(local.values()), local  # its own schedules paused when it stopped
    assert {"evening", "morning", "intraday", "daily-report"} <= set(production)
    assert not any(production.values()), production  # the production deployments untouched


def test_serve_refuses_to_start_without_a_server() -> None:
    env = {**os.environ, "PREFECT_API_URL": ""}
    done = subprocess.run(
        [sys.executable, "-m", "deployments.serve"], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "prefect server start" in done.stderr
