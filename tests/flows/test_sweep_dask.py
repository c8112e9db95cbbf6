"""``autotrade backtest sweep --dask-address``: the configurations run as Prefect tasks on a real Dask cluster
(Prefect's DaskTaskRunner) and give exactly the local parallel sweep's table; the flow and its task runs are
recorded in Prefect. Under this package's Prefect test harness (shared with the other flow tests)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import typer
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from typer.testing import CliRunner

from autotrade.backtest.cli import backtest_app
from tests.flows.conftest import settled_task_runs

POINTS = ["--param", "stop_loss_rate=3,6", "--param", "take_profit_rate=8,12"]
MARKET = ["--synthetic", "30", "1", "--seed", "5"]


@pytest.fixture
def scheduler() -> Iterator[str]:
    from distributed import LocalCluster

    # One in-process worker with two threads (worker processes would spend seconds importing the package).
    with LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        yield str(cluster.scheduler_address)


def _table(path: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = pd.read_csv(path).to_dict("records")
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]


def test_a_sweep_on_a_dask_cluster_equals_the_local_parallel_sweep(
    prefect_server: None, scheduler: str, tmp_path: Path
) -> None:
    app = typer.Typer()
    app.add_typer(backtest_app, name="backtest")
    app.command("other")(lambda: None)
    runner = CliRunner()
    local = runner.invoke(app, ["backtest", "sweep", *MARKET, *POINTS, "--workers", "2",
                                "--out", str(tmp_path / "local")])  # fmt: skip
    assert local.exit_code == 0, local.output
    on_dask = runner.invoke(app, ["backtest", "sweep", *MARKET, *POINTS, "--dask-address", scheduler,
                                  "--out", str(tmp_path / "dask")])  # fmt: skip
    assert on_dask.exit_code == 0, on_dask.output
    assert f"on the Dask scheduler at {scheduler}" in on_dask.output

    dask_rows = _table(tmp_path / "dask" / "sweep.csv")
    assert len(dask_rows) == 4 and len({r["final_equity"] for r in dask_rows}) == 4
    assert dask_rows == _table(tmp_path / "local" / "sweep.csv")
    assert (tmp_path / "dask" / "sweep.csv").read_bytes() == (tmp_path / "local" / "sweep.csv").read_bytes()
    assert pd.read_parquet(tmp_path / "dask" / "sweep.parquet").equals(
        pd.read_parquet(tmp_path / "local" / "sweep.parquet")
    )
    # Prefect recorded the sweep: one flow run, one completed task run per configuration.
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["backtest_sweep"])))
    tasks = asyncio.run(settled_task_runs(run.id))
    assert run.state is not None and run.state.is_completed()
    assert sorted(t.name.rsplit("-", 1)[0] for t in tasks) == ["backtest_configuration"] * 4
    assert all(t.state is not None and t.state.is_completed() for t in tasks)
