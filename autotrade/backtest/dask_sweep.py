"""A sweep's configurations as Prefect tasks on a Dask cluster (Prefect's ``DaskTaskRunner``, prefect-dask).

Imported only when a sweep is given a Dask scheduler's address (``autotrade backtest sweep --dask-address
tcp://host:8786``): it loads Prefect, Dask and distributed, which a local sweep never needs.

The flow ``backtest_sweep`` sends the market to every worker once (``Client.scatter(broadcast=True)``),
then submits one task per valid configuration; each task is the same
:func:`~autotrade.backtest.sweep.configuration_metrics` a local sweep runs, so the rows are the same. Results
come back in configuration order whatever the order the workers finish in.

The workers need this package installed (the same version) and a Prefect API to report their task runs to:
the flow run and its task runs are recorded in the Prefect server of ``PREFECT_API_URL``, which should be the
same for the sweep and the workers (without one each process starts a temporary server of its own).
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect_dask.task_runners import DaskTaskRunner

from autotrade.backtest.config import BacktestConfig
from autotrade.backtest.data import MarketData


@task(name="backtest_configuration", persist_result=False, cache_policy=NO_CACHE)
def backtest_configuration(data: MarketData, config: BacktestConfig) -> dict[str, Any]:
    """The scalar metrics of one configuration over the whole market (one row of the sweep's table)."""
    from autotrade.backtest.sweep import configuration_metrics

    return configuration_metrics(data, config)


# The markets of the sweeps running in this process, by key: a flow's parameters are recorded in the Prefect
# API as JSON, so the flow receives the market's key, not its arrays.
_MARKETS: dict[str, MarketData] = {}


@flow(name="backtest_sweep", persist_result=False, validate_parameters=False)
def backtest_sweep(market_key: str, configs: list[BacktestConfig]) -> list[dict[str, Any]]:
    """Every configuration's metrics, in order, computed on the flow's Dask cluster."""
    data = _MARKETS[market_key]
    ctx = FlowRunContext.get()
    market: Any = data
    if ctx is not None and isinstance(ctx.task_runner, DaskTaskRunner):
        # Sent once to each worker instead of inside every task's arguments.
        market = ctx.task_runner.client.scatter(data, broadcast=True, hash=False)  # type: ignore[no-untyped-call]
    futures = [backtest_configuration.submit(market, config) for config in configs]
    return [f.result() for f in futures]


def run_on_dask(data: MarketData, configs: list[BacktestConfig], address: str) -> list[dict[str, Any]]:
    """The metrics of ``configs`` (in order) from the Dask scheduler at ``address`` (``tcp://host:port``)."""
    key = uuid.uuid4().hex
    _MARKETS[key] = data
    try:
        runner: Any = DaskTaskRunner(address=address)  # a TaskRunner of its own futures' type
        sweep_flow = backtest_sweep.with_options(task_runner=runner)
        result: list[dict[str, Any]] = sweep_flow(key, configs)
    finally:
        del _MARKETS[key]
    return result
