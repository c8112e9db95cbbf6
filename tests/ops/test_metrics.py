"""/metrics scraped and parsed: today's ledger figures worked out by hand and the API's latency histogram;
/ready failing when the database or the broker is down, passing with the simulator up."""

from __future__ import annotations

import dataclasses
from datetime import datetime, time, timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from autotrade.config import get_settings
from autotrade.domain.krx import KST
from autotrade.domain.models import ExitReason, Side, TradeAction
from autotrade.domain.orders import IntentStatus
from autotrade.ops.metrics import today_kst
from autotrade.store.db import Database
from autotrade.store.models import (
    AccessLog,
    FillRow,
    NotificationFailure,
    OrderIntentRow,
    SecurityEvent,
    TradeRecordRow,
)
from autotrade.store.repositories import Users
from tests.api.conftest import Calls, api  # noqa: F401 - the fixture

A1 = "11111111"


def _seed_today(db: Database) -> None:
    day = today_kst()
    noon = datetime.combine(day, time(12), tzinfo=KST)
    with db.unit_of_work() as s:
        Users(s).ensure("alice")
        Users(s).ensure_account("alice", A1)
        s.flush()
        for key, side, qty, filled, no, status, d in (
            ("a", Side.BUY, 10, 10, "1", IntentStatus.FILLED, day),
            ("b", Side.BUY, 10, 6, "2", IntentStatus.EXPIRED, day),
            ("c", Side.BUY, 4, 0, None, IntentStatus.REJECTED, day),
            ("d", Side.SELL, 5, 5, "3", IntentStatus.FILLED, day),
            ("y", Side.BUY, 99, 0, "9", IntentStatus.EXPIRED, day - timedelta(days=1)),  # yesterday
        ):  # fmt: skip
            s.add(OrderIntentRow(key=key, trading_day=d, user_id="alice", account_no=A1, code="005930",
                                 side=side, purpose=side.value, quantity=qty, price=1_000, trade_type="LIMIT",
                                 status=status, order_no=no, filled_quantity=filled))  # fmt: skip
        for n in range(3):
            s.add(FillRow(user_id="alice", account_no=A1, order_no="1", fill_no=f"f{n}", code="005930",
                          side=Side.BUY, quantity=1, price=1_000, executed_at=noon))  # fmt: skip
        s.add(TradeRecordRow(trade_id="t1", user_id="alice", account_no=A1, code="005930", name="n",
                             action=TradeAction.SELL, quantity=5, price=950, amount=4_750, executed_at=noon,
                             trading_day=day, exit_reason=ExitReason.STOP_LOSS))  # fmt: skip
        for allowed in (True, True, False):
            s.add(AccessLog(at=noon, user_id="alice", account_no=A1, action="order:buy", allowed=allowed))
        s.add(SecurityEvent(at=noon, user_id="alice", account_no=A1, rule="burst", severity="high",
                            action_taken="key DISABLED"))  # fmt: skip
        s.add(NotificationFailure(at=noon, channel="slack", audience="operator", kind="ERROR", error="429"))


def _scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }


def test_metrics_are_scraped_and_parsed(api: tuple[TestClient, Database, Calls]) -> None:  # noqa: F811
    client, db, _ = api
    _seed_today(db)
    client.get("/health")
    m = _scrape(client)
    assert m[("autotrade_orders", (("side", "BUY"), ("status", "FILLED")))] == 1
    assert m[("autotrade_orders", (("side", "BUY"), ("status", "EXPIRED")))] == 1  # not yesterday's
    assert m[("autotrade_orders", (("side", "BUY"), ("status", "REJECTED")))] == 1
    # At the broker: buys a and b, 20 shares ordered, 16 filled; the sell d 5 of 5: 21 / 25 = 0.84.
    assert m[("autotrade_order_shares", (("kind", "ordered"), ("side", "BUY")))] == 20
    assert m[("autotrade_order_shares", (("kind", "filled"), ("side", "BUY")))] == 16
    assert m[("autotrade_fill_rate", ())] == pytest.approx(0.84)
    assert m[("autotrade_fills", ())] == 3
    assert m[("autotrade_exit_tier_firings", (("tier", "STOP_LOSS"),))] == 1
    assert m[("autotrade_gateway_requests", (("action", "order:buy"), ("allowed", "false")))] == 1
    assert m[("autotrade_gateway_requests", (("action", "order:buy"), ("allowed", "true")))] == 2
    assert m[("autotrade_kill_switch_events", ())] == 1
    assert m[("autotrade_notification_failures", (("channel", "slack"),))] == 1
    health = (("method", "GET"), ("route", "/health"), ("status", "200"))
    assert m[("autotrade_api_request_seconds_count", health)] == 1


def test_ready_fails_when_the_broker_or_the_database_is_down(
    api: tuple[TestClient, Database, Calls], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    from autotrade.sim.server import running_simulator

    client, _, _ = api
    with running_simulator(seed=1) as sim:
        monkeypatch.setenv("AUTOTRADE_BROKER_BASE_URL", sim.base_url)
        get_settings.cache_clear()
        try:
            up = client.get("/ready")
            assert up.status_code == 200, up.text
            assert up.json() == {"ready": True, "checks": {"database": True, "broker": True, "feed": True}}
            deps = client.app.state.deps  # type: ignore[attr-defined]
            client.app.state.deps = dataclasses.replace(  # type: ignore[attr-defined]
                deps, db=Database("postgresql+psycopg2://postgres@127.0.0.1:1/nowhere")
            )
            try:
                down = client.get("/ready")
            finally:
                client.app.state.deps.db.dispose()  # type: ignore[attr-defined]
                client.app.state.deps = deps  # type: ignore[attr-defined]
            assert down.status_code == 503 and down.json()["checks"]["database"] is False
        finally:
            get_settings.cache_clear()
    port = int(sim.base_url.rsplit(":", 1)[1])  # the simulator is stopped: nothing listens there now
    monkeypatch.setenv("AUTOTRADE_BROKER_BASE_URL", f"http://127.0.0.1:{port}")
    get_settings.cache_clear()
    try:
        gone = client.get("/ready")
    finally:
        get_settings.cache_clear()
    assert gone.status_code == 503
    assert gone.json()["checks"] == {"database": True, "broker": False, "feed": False}
