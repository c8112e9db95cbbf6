"""Failures surface: an evening run whose accounts still fail after the retries ends Failed in Prefect with
the counts and first reasons, the operator is told (and the notice is in the run's Prefect log), the
summary is an artifact; a re-run or a retry tells users only what is new."""

from __future__ import annotations

import io
import json
from datetime import datetime, time
from pathlib import Path

import pytest
import sqlalchemy as sa

from autotrade.demo.stack import Stack
from autotrade.domain.krx import KST
from autotrade.store.models import TradingSignal, UserNotice
from flows.evening_signal_and_buy import evening_signal_and_buy
from flows.morning_fill_and_arm import morning_fill_and_arm
from tasks.trading import retrieve_broker_tokens
from tests.flows.conftest import DAY1, DAY2, evening_scan
from tests.flows.test_flows import artifacts_of, broker_orders, logs_of, run


async def test_accounts_failing_after_retries_fail_the_run_and_reach_the_operator(
    stack: Stack, notes: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retrieve_broker_tokens, "retry_delay_seconds", [0.0, 0.0, 0.0])
    evening_scan(stack, DAY1)
    # The deposit inquiry answers HTTP 500 every time: each account fails on every one of the 4 runs.
    stack.sim.admin.add_fault("http_500", api_id="kt00001", count=100_000)
    state, result, run_id = await run(evening_signal_and_buy, trading_day=DAY1, collect_fills=False)

    assert state.is_failed(), state
    message = str(state.message)
    assert message.startswith("2 of 2 accounts failed after retries (no buys placed): "), message
    assert message.count("BrokerUnavailable") == 2, message  # the first reasons, one per account
    assert result["accounts"] == 2 and result["accounts_with_errors"] == 2 and result["orders"] == 0
    assert broker_orders(stack) == 0

    told = notes.getvalue()
    assert "evening_signal_and_buy" in told and "2 of 2 accounts failed after retries" in told
    logs = await logs_of([run_id])
    assert any("operator notified" in line and "2 of 2 accounts failed" in line for line in logs), logs
    [summary] = [a for a in await artifacts_of([run_id]) if a.key == "evening-summary"]
    assert "2 accounts failed after retries" in str(summary.data)
    assert "| accounts_with_errors | 2 |" in str(summary.data)


async def test_a_clean_run_stays_completed_with_its_summary(stack: Stack) -> None:
    path = evening_scan_path(stack)
    state, result, run_id = await run(evening_signal_and_buy, trading_day=DAY1, collect_fills=False)
    assert state.is_completed(), state.message
    assert result["accounts_with_errors"] == 0 and result["orders"] > 0
    [summary] = [a for a in await artifacts_of([run_id]) if a.key == "evening-summary"]
    assert f"| orders | {result['orders']} |" in str(summary.data) and "failed" not in str(summary.data)
    # each signal carries the scan's reasons for its stock, then the limit that sized the buy
    scanned = {r["code"]: r["reasons"] for r in json.loads(path.read_text(encoding="utf-8"))["scan_results"]}
    with stack.db.unit_of_work() as s:
        signals = s.execute(sa.select(TradingSignal.code, TradingSignal.reasons)).all()
    assert len(signals) == result["orders"]
    for code, reasons in signals:
        stored = json.loads(reasons)
        assert stored[:-1] == scanned[code] and stored[-1].startswith("bound by "), stored


def evening_scan_path(stack: Stack) -> Path:
    evening_scan(stack, DAY1)
    return stack.scans_dir / f"scan_{DAY1:%Y%m%d}.json"


async def test_a_weekday_run_with_no_scan_waits_then_fails_and_tells_the_operator(
    stack: Stack, notes: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting = stack.settings.model_copy(update={"scan_wait_minutes": 5.0, "scan_poll_seconds": 30.0})
    monkeypatch.setattr(stack.runtime, "settings", waiting)
    stack.at(DAY1, time(15, 40))
    state, _, _ = await run(evening_signal_and_buy, trading_day=DAY1)
    assert state.is_failed()
    message = str(state.message)
    assert f"no readable scan of {DAY1} at {stack.scans_dir} by 15:45 KST (11 attempts" in message, message
    assert stack.now() >= datetime.combine(DAY1, time(15, 45), tzinfo=KST)  # it did wait, on the clock
    assert broker_orders(stack) == 0
    assert "no readable scan of 2026-11-18" in notes.getvalue()  # the operator's failure notice


def _count(notes: io.StringIO, kind: str) -> int:
    return notes.getvalue().count(kind)


async def test_re_runs_tell_users_only_what_is_new(stack: Stack, notes: io.StringIO) -> None:
    evening_scan(stack, DAY1)
    state, result, _ = await run(evening_signal_and_buy, trading_day=DAY1)
    assert state.is_completed(), state.message and result["positions_armed"] > 0
    first = {k: _count(notes, k) for k in ("BUY_ORDERS_PLACED", "FILLS_CONFIRMED", "EXITS_ARMED")}
    assert first == {"BUY_ORDERS_PLACED": 2, "FILLS_CONFIRMED": 2, "EXITS_ARMED": 2}, first

    # The same day again (a re-run, or the UI's retry): nothing new happened, nobody hears anything.
    state, _, _ = await run(evening_signal_and_buy, trading_day=DAY1)
    assert state.is_completed(), state.message
    assert {k: _count(notes, k) for k in first} == first

    # The next morning's 09:15 message is new (another day), once; its re-run tells nothing again.
    stack.at(DAY2, time(9, 5))
    state, morning, _ = await run(morning_fill_and_arm, trading_day=DAY2)
    assert state.is_completed(), state.message and morning["users_notified"] == 2
    assert _count(notes, "EXITS_ARMED") == 4
    state, morning, _ = await run(morning_fill_and_arm, trading_day=DAY2)
    assert morning["users_notified"] == 0 and _count(notes, "EXITS_ARMED") == 4

    with stack.db.unit_of_work() as s:
        kinds = dict(
            s.execute(sa.select(UserNotice.kind, sa.func.count()).group_by(UserNotice.kind)).tuples().all()
        )
    assert kinds["BUY_ORDERS_PLACED"] == result["orders"]  # one row per order told
    assert kinds["EXITS_ARMED"] == 2 * result["positions_armed"]  # each position on each of the two days
