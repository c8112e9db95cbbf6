"""The flow graph as the Prefect UI shows it: two trading days run under Prefect, read back from the Prefect
API. Each flow's steps are task runs named for what they do, in the pipeline's order, all Completed; a
transient failure injected into one step is retried by that step alone (its run count is 2, every other
step's is 1) and the day comes out as without it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, time
from typing import Any
from uuid import UUID

import pytest
from prefect.client.schemas.objects import TaskRun
from sqlalchemy.exc import OperationalError

import tasks.trading as trading
from autotrade.demo.stack import Stack
from autotrade.domain.krx import KST
from autotrade.trading.ports import NotProcessed
from flows.evening_signal_and_buy import evening_signal_and_buy
from flows.intraday_reconcile import intraday_reconcile
from flows.morning_fill_and_arm import morning_fill_and_arm
from tests.flows.conftest import DAY1, DAY2, evening_scan, settled_task_runs
from tests.flows.test_flows import broker_orders, buy_intents, run

EVENING = ["validate_scan", "list_accounts", "retrieve_broker_tokens", "check_risk", "place_orders",
           "confirm_fills"]  # fmt: skip
MORNING = ["list_accounts", "confirm_fills", "arm_exits"]
RETRYING = (
    trading.validate_scan_task, trading.retrieve_broker_tokens, trading.check_risk, trading.place_orders,
    trading.confirm_fills, trading.arm_exits, trading.reconcile_positions,
)  # fmt: skip


def transient() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("the database is busy (injected)"))


class FailOnce:
    """Replaces ``owner.name`` by a wrapper whose first call raises ``error`` (the rest go through)."""

    def __init__(self, mp: pytest.MonkeyPatch, owner: object, name: str, error: Callable[[], Exception]):
        self.fired = 0
        original = getattr(owner, name)

        def first(*args: Any, **kwargs: Any) -> None:
            self.fired += 1
            if self.fired == 1:
                raise error()

        if _is_async(original):

            @functools.wraps(original)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                first()
                return await original(*args, **kwargs)

            mp.setattr(owner, name, async_wrapper)
        else:

            @functools.wraps(original)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                first()
                return original(*args, **kwargs)

            mp.setattr(owner, name, wrapper)


def _is_async(f: Any) -> bool:
    import inspect

    return inspect.iscoroutinefunction(f)


async def task_runs(run_id: UUID) -> list[TaskRun]:
    runs = await settled_task_runs(run_id)
    return sorted(
        runs, key=lambda t: t.start_time or t.expected_start_time or datetime.max.replace(tzinfo=KST)
    )


def step(t: TaskRun) -> str:
    return t.name.rsplit("-", 1)[0]


def graph(runs: list[TaskRun]) -> list[tuple[str, int, str]]:
    return [(step(t), t.run_count, t.state.type.value if t.state else "?") for t in runs]


def _upstream(t: TaskRun) -> set[UUID]:
    return {i.id for i in t.task_inputs.get("after", []) if getattr(i, "input_type", "") == "task_run"}  # type: ignore[union-attr]


def check(runs: list[TaskRun], names: list[str], retried: set[str]) -> None:
    """The runs are ``names`` in that order (notification tasks aside), all Completed, and only the steps
    in ``retried`` ran twice."""
    seen = [t for t in runs if not step(t).startswith("notify")]
    assert [step(t) for t in seen] == names, graph(runs)
    assert all(t.state and t.state.is_completed() for t in runs), graph(runs)
    assert {step(t): t.run_count for t in seen} == {n: 2 if n in retried else 1 for n in names}, graph(runs)


async def test_two_days_read_back_from_the_prefect_api(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    for t in RETRYING:
        monkeypatch.setattr(t, "retry_delay_seconds", [0.0, 0.0, 0.0])
    rt = stack.runtime

    # Day 1, evening: the scan's batch row meets a busy database once, one account's risk check too, and
    # the 16:00 fill confirmation once.
    evening_scan(stack, DAY1)
    scan = FailOnce(monkeypatch, trading, "_store_scan_batch", transient)
    risk = FailOnce(monkeypatch, rt.buys, "_account_state", transient)
    fills = FailOnce(monkeypatch, rt.reconciler, "reconcile_account", transient)
    state, evening, evening_id = await run(evening_signal_and_buy, trading_day=DAY1)
    assert state.is_completed(), state.message
    assert evening["orders"] > 0 and evening["accounts_with_errors"] == 0 and evening["positions_armed"] > 0
    # Each retry worked on the account that had failed only (the scan's: on the scan).
    assert scan.fired == 2 and risk.fired == 3 and fills.fired == 3
    check(await task_runs(evening_id), EVENING, {"validate_scan", "check_risk", "confirm_fills"})
    # The chain's edges: each step's ``after`` is the task run of the step before it.
    by_step = {step(t): t for t in await task_runs(evening_id)}
    assert _upstream(by_step["check_risk"]) == {by_step["retrieve_broker_tokens"].id}
    assert _upstream(by_step["place_orders"]) == {by_step["check_risk"].id}
    assert len(buy_intents(stack, DAY1)) == evening["orders"] == broker_orders(stack)
    monkeypatch.undo()
    for t in RETRYING:
        monkeypatch.setattr(t, "retry_delay_seconds", [0.0, 0.0, 0.0])

    # Day 2, morning: arming the exits meets a busy database once.
    stack.at(DAY2, time(9, 5))
    arm = FailOnce(monkeypatch, rt.engine, "load", transient)
    state, morning, morning_id = await run(morning_fill_and_arm, trading_day=DAY2)
    assert state.is_completed(), state.message
    assert morning["armed"] == evening["positions_armed"] and arm.fired == 2
    check(await task_runs(morning_id), MORNING, {"arm_exits"})

    # Day 2, the session until 11:00: one reconciliation pass meets a busy database once; that pass alone
    # runs again, and every pass is a task run of its own under the watch.
    reconcile = FailOnce(monkeypatch, rt.reconciler, "reconcile_account", transient)
    until = datetime.combine(DAY2, time(11, 0), tzinfo=KST)
    state, watch, watch_id = await run(intraday_reconcile, trading_day=DAY2, until=until)
    assert state.is_completed(), state.message
    runs = await task_runs(watch_id)
    passes = [t for t in runs if step(t) == "reconcile_positions"]
    assert step(runs[0]) == "watch_prices" and len(passes) == watch["reconciliations"] >= 2, graph(runs)
    assert {step(t) for t in runs} == {"watch_prices", "reconcile_positions"}, graph(runs)
    assert all(t.state and t.state.is_completed() for t in runs), graph(runs)
    assert sorted(t.run_count for t in passes) == [1] * (len(passes) - 1) + [2], graph(runs)
    assert runs[0].run_count == 1 and reconcile.fired > len(passes)
    monkeypatch.undo()
    for t in RETRYING:
        monkeypatch.setattr(t, "retry_delay_seconds", [0.0, 0.0, 0.0])

    # Day 2, evening: the deposit inquiry answers HTTP 500 for both accounts' first try (each tries four
    # times), and the first order sent is not processed by the broker.
    evening_scan(stack, DAY2)
    stack.sim.admin.add_fault("http_500", api_id="kt00001", count=8)
    sent_before = broker_orders(stack)
    order = FailOnce(
        monkeypatch, rt.orders, "execute", lambda: NotProcessed("the broker was busy (injected)")
    )
    state, evening2, evening2_id = await run(evening_signal_and_buy, trading_day=DAY2)
    assert state.is_completed(), state.message
    assert stack.sim.admin.faults()["counts"].get("http_500") == 8 and order.fired > 1
    assert evening2["orders"] > 0 and evening2["accounts_with_errors"] == 0
    check(await task_runs(evening2_id), EVENING, {"retrieve_broker_tokens", "place_orders"})
    assert len(buy_intents(stack, DAY2)) == evening2["orders"] == broker_orders(stack) - sent_before
