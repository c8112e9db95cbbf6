"""The four flows as Prefect runs them: each flow on two trading days, a same-day re-run that places
nothing twice, a retry of the buy batch after a transient broker fault, holidays skipped, a rejected scan
ordering nothing and telling the operator, and no secret in any artifact or log the runs left."""

from __future__ import annotations

import io
from datetime import date, time
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import Artifact
from prefect.client.schemas.sorting import LogSort

from autotrade.demo.stack import Stack
from autotrade.domain.models import Side
from autotrade.store.models import EquitySnapshot, OrderIntentRow, ThreeTierStrategy, TradeRecordRow
from flows.daily_report import daily_report
from flows.evening_signal_and_buy import evening_signal_and_buy
from flows.intraday_reconcile import intraday_reconcile
from flows.morning_fill_and_arm import morning_fill_and_arm
from tests.flows.conftest import DAY1, DAY2, evening_scan, settled_task_runs

HOLIDAY = date(2026, 12, 25)


async def run(flow: Any, **params: Any) -> tuple[Any, Any, UUID]:
    state = await flow(**params, return_state=True)
    result = await state.result(raise_on_failure=False)
    return state, result, state.state_details.flow_run_id


def broker_orders(stack: Stack) -> int:
    return len(stack.sim.engine.orders)


def buy_intents(stack: Stack, day: date) -> list[tuple[str, str, str | None]]:
    with stack.db.unit_of_work() as s:
        rows = s.scalars(
            sa.select(OrderIntentRow).where(
                OrderIntentRow.trading_day == day, OrderIntentRow.side == Side.BUY
            )
        ).all()
        return sorted((r.user_id, r.code, r.order_no) for r in rows)


async def artifacts_of(run_ids: list[UUID]) -> list[Any]:
    async with get_client() as client:
        # The client sends null for filters not given, which this server version refuses, and an empty task
        # run filter would drop the flow-level artifacts: post the flow-run filter alone.
        response = await client._client.post(
            "/artifacts/filter",
            json={"flow_runs": {"id": {"any_": [str(r) for r in run_ids]}}, "limit": 200, "offset": 0,
                  "sort": "CREATED_DESC"},
        )  # fmt: skip
        response.raise_for_status()
        return [Artifact.model_validate(a) for a in response.json()]


async def logs_of(run_ids: list[UUID]) -> list[str]:
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()
    async with get_client() as client:
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)), limit=200, offset=0,
            sort=LogSort.TIMESTAMP_ASC,
        )  # fmt: skip
    return [entry.message for entry in logs]


async def test_two_trading_days_through_every_flow(stack: Stack, notes: io.StringIO) -> None:
    evening_scan(stack, DAY1)
    state, result, evening_id = await run(evening_signal_and_buy, trading_day=DAY1)
    assert state.is_completed(), state.message
    assert result["orders"] > 0 and result["accounts"] == 2 and result["accounts_with_errors"] == 0
    assert result["positions_armed"] > 0
    intents = buy_intents(stack, DAY1)
    assert len(intents) == result["orders"] and all(no for _, _, no in intents)
    sent = broker_orders(stack)
    assert sent == len(intents)

    # The same day again: every intent already exists, nothing reaches the broker twice.
    state, _, rerun_id = await run(evening_signal_and_buy, trading_day=DAY1)
    assert state.is_completed(), state.message
    assert broker_orders(stack) == sent and buy_intents(stack, DAY1) == intents

    stack.at(DAY2, time(9, 5))
    state, morning, morning_id = await run(morning_fill_and_arm, trading_day=DAY2)
    assert state.is_completed(), state.message
    with stack.db.unit_of_work() as s:
        armed = s.scalar(sa.select(sa.func.count(ThreeTierStrategy.id))) or 0
    assert armed == result["positions_armed"] and morning["armed"] == armed

    state, watch, watch_id = await run(intraday_reconcile, trading_day=DAY2)
    assert state.is_completed(), state.message
    assert watch["ticks"] > 0 and watch["watched"] > 0, watch
    # The count includes the closing reconciliation, so 1 would mean none ran during the session. The watch
    # runs from 09:05 to 15:30, 385 minutes; one every 5 minutes at the earliest gives at most 385 // 5 = 77
    # periodic ones, 78 with the closing one. How many of those 77 run depends on how far the simulated
    # clock (thousands of times real time) moves between two passes of the loop on a loaded machine, so the
    # lower bound asks only for periodic reconciliation to have happened.
    assert 2 <= watch["reconciliations"] <= 78, watch
    assert stack.now() >= _at(DAY2, time(15, 30))

    stack.at(DAY2, time(16, 30))
    state, report, report_id = await run(daily_report, trading_day=DAY2)
    assert state.is_completed(), state.message
    assert report["users"] == 2

    # The operator's report against the day's trades, counted here from the trade records.
    with stack.db.unit_of_work() as s:
        trades = s.scalars(sa.select(TradeRecordRow).where(TradeRecordRow.trading_day == DAY2)).all()
        realized = sum(t.profit_loss or 0 for t in trades)
        equity = sum(s.scalars(sa.select(EquitySnapshot.equity).where(EquitySnapshot.trading_day == DAY2)))
    (operator,) = [a for a in await artifacts_of([report_id]) if a.key == f"daily-report-{DAY2:%Y%m%d}"]
    text = str(operator.data)
    assert f"trades today: {len(trades)};" in text and f"realized P&L today {realized:+,}원" in text
    assert f"equity {equity:,}원" in text and equity > 0

    runs = [evening_id, rerun_id, morning_id, watch_id, report_id]
    keys = {a.key for a in await artifacts_of(runs)}
    assert {"scan-validation", "orders-placed", "exits-armed", f"daily-report-{DAY2:%Y%m%d}",
            f"trades-{DAY2:%Y%m%d}"} <= keys  # fmt: skip
    assert "BUY_ORDERS_PLACED" in notes.getvalue()

    # Nothing the runs left behind carries an app key, an app secret or a broker token.
    secrets = _secrets(stack)
    texts = [str(a.data) + str(a.description) for a in await artifacts_of(runs)] + await logs_of(runs)
    texts.append(notes.getvalue())
    assert len(texts) > 5
    leaked = [s for s in secrets for t in texts if s in t]
    assert not leaked, "a secret reached an artifact, a log or a notification"


STEPS = ("retrieve_broker_tokens", "check_risk", "place_orders")


async def test_a_transient_fault_retries_the_buy_batch_without_doubling(stack: Stack) -> None:
    evening_scan(stack, DAY1)
    # Two accounts, each trying the deposit inquiry four times (the client's own query retries): the first
    # task run sees both fail with a server error, the retry finds the broker back.
    stack.sim.admin.add_fault("http_500", api_id="kt00001", count=8)
    state, result, run_id = await run(evening_signal_and_buy, trading_day=DAY1, collect_fills=False)
    assert state.is_completed(), state.message
    assert stack.sim.admin.faults()["counts"].get("http_500") == 8
    task_runs = await settled_task_runs(run_id)
    # The deposit inquiry is the token step's: that step ran twice, the steps after it once.
    runs = {name: [t for t in task_runs if t.name.startswith(name)] for name in STEPS}
    assert [len(r) for r in runs.values()] == [1, 1, 1], runs
    assert [r[0].run_count for r in runs.values()] == [2, 1, 1], runs
    assert all(r[0].state.is_completed() for r in runs.values())
    intents = buy_intents(stack, DAY1)
    assert result["orders"] == len(intents) > 0 and result["accounts_with_errors"] == 0
    assert len({(u, c) for u, c, _ in intents}) == len(intents) == broker_orders(stack)


async def test_a_holiday_is_skipped_by_every_flow(stack: Stack) -> None:
    for flow in (evening_signal_and_buy, morning_fill_and_arm, intraday_reconcile, daily_report):
        state, result, _ = await run(flow, trading_day=HOLIDAY)
        assert state.is_completed(), state.message
        assert result == {"trading_day": HOLIDAY.isoformat(), "skipped": "not a KRX trading day"}
    assert broker_orders(stack) == 0 and buy_intents(stack, HOLIDAY) == []


async def test_a_rejected_scan_orders_nothing_and_tells_the_operator(
    stack: Stack, notes: io.StringIO
) -> None:
    stack.at(DAY1, time(15, 40))
    bad = {
        "trading_day": DAY1.isoformat(),
        "generated_at": "2026-11-18T15:36:00+09:00",
        "scan_results": [
            {"code": "12345", "name": "", "score": 42.0, "current_price": -5, "reasons": []},
        ],
    }
    state, _, run_id = await run(evening_signal_and_buy, trading_day=DAY1, scan_payload=bad)
    assert state.is_failed()
    assert "ScanRejected" in str(state.message) or "scan" in str(state.message).lower()
    assert broker_orders(stack) == 0 and buy_intents(stack, DAY1) == []
    assert "evening_signal_and_buy" in notes.getvalue()  # the operator's failure notification
    keys = {a.key for a in await artifacts_of([run_id])}
    assert "scan-validation" in keys and "orders-placed" not in keys


def _at(day: date, t: time) -> Any:
    from datetime import datetime

    from autotrade.domain.krx import KST

    return datetime.combine(day, t, tzinfo=KST)


def _secrets(stack: Stack) -> list[str]:
    engine = stack.sim.engine
    keys = [k for k in engine.appkeys.values()]
    out = [k.appkey for k in keys] + [k.secretkey for k in keys] + [t.value for t in engine.tokens.values()]
    assert len(out) >= 5  # two keys, two secrets, at least one broker token
    return out


async def test_a_long_table_artifact_keeps_its_first_rows_and_counts_the_rest(prefect_server: None) -> None:
    """10,000 users' orders would be one event too large for the Prefect server: the table is cut."""
    import json

    from prefect import flow

    from flows.common import ARTIFACT_ROWS, table_artifact

    @flow(name="long_table")
    async def long_table() -> None:
        rows = [{"code": f"{i:06d}", "quantity": i} for i in range(ARTIFACT_ROWS + 500)]
        await table_artifact("long-table", rows, "nothing", "orders")

    state, _, run_id = await run(long_table)
    assert state.is_completed()
    [artifact] = [a for a in await artifacts_of([run_id]) if a.key == "long-table"]
    table = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert len(table) == ARTIFACT_ROWS + 1 and table[0] == {"code": "000000", "quantity": 0}
    assert table[-1]["code"] == "... and 500 more rows (in the database and the report)"
    assert artifact.description == f"orders (first {ARTIFACT_ROWS:,} of {ARTIFACT_ROWS + 500:,})"
