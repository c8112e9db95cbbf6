"""The evening's fan-out setting, fast: ``AUTOTRADE_EVENING_FANOUT`` decides where the buys are placed (the
run's own process by default; child runs of the place-buys deployment with ``deployment``), the rule that
takes a silent child for a crashed one, and the child flow's parameters surviving a served run. The fan-out
over real workers, one killed, is tests/flows/test_fanout_workers.py."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta

import cloudpickle
import pytest
from prefect.states import Pending, Running, Scheduled
from pydantic import ValidationError

from autotrade.config import Settings
from autotrade.demo.stack import Stack
from autotrade.store.leases import LeaseState
from flows.evening_signal_and_buy import evening_signal_and_buy
from flows.fanout import silent
from flows.place_buys import place_buys
from tests.conftest import fresh_schema
from tests.flows.conftest import DAY1
from tests.flows.test_api_execute_paths import counts, scan_of

T0 = datetime(2026, 11, 18, 6, 40, tzinfo=UTC)
TTL = timedelta(seconds=30)


def _at(state: object, moment: datetime) -> object:
    state.timestamp = moment  # type: ignore[attr-defined]
    return state


def _lease(expires: datetime, finished: datetime | None = None) -> LeaseState:
    return LeaseState(False, "host:1:abc", expires, finished)


@pytest.mark.parametrize(
    ("state", "lease", "seconds_later", "dead"),
    [
        (Running(), None, 29, False),  # started 29 s ago, its lease not taken yet: starting
        (Running(), None, 31, True),  # never took its lease within the 30 s: dead
        (Running(), _lease(T0 + timedelta(seconds=40)), 39, False),  # renewed: alive
        (Running(), _lease(T0 + timedelta(seconds=40)), 41, True),  # not renewed since: its process died
        (Running(), _lease(T0 - timedelta(seconds=5)), 29, False),  # an earlier attempt's lease: not its own
        (Pending(), None, 89, False),  # Pending: 3 x 30 s for the worker to start its process
        (Pending(), None, 91, True),
        (Running(), _lease(T0 + timedelta(seconds=10), T0 + timedelta(seconds=10)), 39, False),  # finished
        (Running(), _lease(T0 + timedelta(seconds=10), T0 + timedelta(seconds=10)), 41, True),  # never ended
        (Scheduled(), None, 3600, False),  # no worker took it yet: waited for
    ],
)
def test_a_child_is_taken_as_crashed_only_when_silent(
    state: object, lease: LeaseState | None, seconds_later: int, dead: bool
) -> None:
    assert silent(_at(state, T0), lease, T0 + timedelta(seconds=seconds_later), TTL) is dead


def test_the_fan_out_needs_a_server_database(tmp_path: object) -> None:
    with pytest.raises(ValidationError, match="server database"):
        Settings(database_url="sqlite:///x.db", evening_fanout="deployment")
    with pytest.raises(ValidationError):
        Settings(database_url="postgresql+psycopg2://u@h/d", evening_fanout="elsewhere")
    assert Settings(database_url="postgresql+psycopg2://u@h/d").evening_fanout == "in-process"


def test_a_served_share_run_validates_its_parameters() -> None:
    """As the worker's process gets it (by value): JSON parameters become the flow's types."""
    flow = pickle.loads(cloudpickle.dumps(place_buys))  # noqa: S301 - our own bytes
    params = flow.validate_parameters(
        {"trading_day": "2026-11-18", "batch_id": 3, "accounts": [["u1", "8100000001"]], "share": "buys:x:0"}
    )
    assert params["trading_day"] == DAY1 and params["accounts"] == [("u1", "8100000001")]


@pytest.fixture
def db_url(pg_url: str) -> Iterator[str]:
    """The stack on PostgreSQL only: the fan-out needs a server database."""
    with fresh_schema(pg_url) as url:
        yield url


@pytest.mark.postgres
@pytest.mark.parametrize("fanout", ["in-process", "deployment"])
async def test_the_setting_decides_where_the_buys_are_placed(stack: Stack, fanout: str) -> None:
    """In-process: the run places the buys itself. Deployment: it starts the place-buys deployment's runs
    and places nothing itself; this Prefect server has no such deployment, so the run fails saying so."""
    stack.runtime.settings = stack.runtime.settings.model_copy(update={"evening_fanout": fanout})
    stack.at(DAY1, time(15, 40))
    payload = {"trading_day": DAY1.isoformat(), "generated_at": f"{DAY1}T15:36:00+09:00",
               "scan_results": scan_of(stack)}  # fmt: skip
    state = await evening_signal_and_buy(
        trading_day=DAY1, scan_payload=payload, collect_fills=False, return_state=True
    )
    intents, sent, _ = counts(stack)
    if fanout == "in-process":
        assert state.is_completed(), state.message
        assert intents == sent == len(stack.sim.engine.orders) == 6
    else:
        assert state.is_failed()
        with pytest.raises(Exception, match="no deployment place_buys/place-buys"):
            await state.result()  # type: ignore[misc]
        assert intents == sent == len(stack.sim.engine.orders) == 0


@pytest.mark.postgres
@pytest.mark.timeout(120)  # without the deadline the evening waits for ever
async def test_a_share_no_worker_starts_is_cancelled_and_its_accounts_fail(stack: Stack) -> None:
    """The place-buys deployment on a pool with no worker: after evening_fanout_start_minutes the share's
    run is cancelled (a worker coming later does not start it) and the evening fails, naming why."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name="nobody-here", type="process"))
    deployment = await place_buys.to_deployment(name="place-buys", work_pool_name="nobody-here")  # type: ignore[misc]
    await deployment.apply()
    stack.runtime.settings = stack.runtime.settings.model_copy(update={
        "evening_fanout": "deployment", "evening_fanout_start_minutes": 0.05,
        "evening_fanout_poll_seconds": 0.3,
    })  # fmt: skip
    stack.at(DAY1, time(15, 40))
    payload = {"trading_day": DAY1.isoformat(), "generated_at": f"{DAY1}T15:36:00+09:00",
               "scan_results": scan_of(stack)}  # fmt: skip
    state = await evening_signal_and_buy(
        trading_day=DAY1, scan_payload=payload, collect_fills=False, return_state=True
    )
    assert state.is_failed()
    assert "ShareNotStarted" in (state.message or ""), state.message
    async with get_client() as client:
        runs = await client.read_flow_runs()
    (share,) = [r for r in runs if r.name.startswith("buys ")]
    assert share.state is not None and share.state.is_cancelled()
    intents, sent, _ = counts(stack)
    assert intents == sent == len(stack.sim.engine.orders) == 0
