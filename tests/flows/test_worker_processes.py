"""The evening buys shared among worker processes (``worker_processes``), as a production evening runs them
for many users: PostgreSQL, the simulator in its own process over HTTP, the vault gateway, Prefect's test
harness. Every intended order reaches the broker once, the flow's own process sends the first share and a
worker process the other, each process tells its own share's users of their orders, a re-run of the same
day sends nothing more, and no app key or secret reaches the run's logs. A runtime whose clock cannot reach
another process is refused up front."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from autotrade.access import GatewayAccess
from autotrade.config import Settings
from autotrade.demo.stack import enable_auto_trading
from autotrade.domain.krx import KST
from autotrade.domain.models import Side
from autotrade.runtime import Runtime, ShiftedClock, set_runtime
from autotrade.sim.server import Admin, simulator_process
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import OrderIntentRow, UserNotice
from autotrade.vault.registration import register_user_api
from flows.evening_signal_and_buy import evening_signal_and_buy
from tests.conftest import fresh_schema
from tests.flows.conftest import DAY1, settled_task_runs
from tests.flows.test_flows import logs_of

pytestmark = pytest.mark.timeout(300)

USERS = 5


@pytest.fixture
def schema_url(pg_url: str) -> Iterator[str]:
    with fresh_schema(pg_url) as url:
        yield url


async def _register(access: GatewayAccess, admin: Admin, db: Database, secrets: list[str]) -> list[str]:
    accounts = []
    for i in range(USERS):
        user, account = f"worker{i}", f"{6_100_000_000 + i:010d}"
        admin.create_account(account, user, 50_000_000)
        key = admin.create_appkey(account)
        secrets += [key["appkey"], key["secretkey"]]
        await register_user_api(
            access.gateway(), user, SecretStr(key["appkey"]), SecretStr(key["secretkey"]), account,
            daily_limit=5_000_000,
        )  # fmt: skip
        accounts.append(account)
    await access.aclose()  # its client belongs to this loop; the flow's runs in another
    enable_auto_trading(db, [f"worker{i}" for i in range(USERS)])
    return accounts


def _scan(admin: Admin, at: datetime) -> dict[str, Any]:
    stocks = admin.stocks()
    codes = sorted((c for c, s in stocks.items() if 5_000 <= s["price"] <= 200_000), key=str)[:3]
    return {
        "trading_day": at.date().isoformat(),
        "generated_at": at.replace(minute=36).isoformat(),
        "scan_results": [
            {"code": c, "name": stocks[c]["name"], "score": 9.0 - i / 10, "current_price": stocks[c]["price"],
             "reasons": ["거래량 급증"]}
            for i, c in enumerate(codes)
        ],
    }  # fmt: skip


def _broker_orders(base: str, accounts: list[str]) -> list[tuple[str, str]]:
    with httpx.Client(base_url=base, timeout=10) as http:
        return sorted(
            (a, o["order_no"]) for a in accounts for o in http.get(f"/_sim/accounts/{a}").json()["orders"]
        )


@pytest.mark.postgres
@pytest.mark.parametrize("processes", [2, "auto"])
async def test_worker_processes_place_each_buy_once(
    prefect_server: None,
    schema_url: str,
    tmp_path: Path,
    processes: int | str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if processes == "auto":  # the default, as a two-core machine runs an evening of 2 accounts per process
        monkeypatch.setattr("flows.fanout.AUTO_ACCOUNTS_PER_PROCESS", 2)
        monkeypatch.setattr("flows.fanout.usable_cores", lambda: 2)
    import flows.fanout

    here: list[tuple[str, str]] = []  # the accounts of the share the flow's own process placed
    buy_share = flows.fanout.buy_share

    async def recorded(batch_id: int, accounts: list[tuple[str, str]], *args: Any) -> list[dict[str, Any]]:
        here.extend(accounts)
        return await buy_share(batch_id, accounts, *args)

    monkeypatch.setattr("flows.fanout.buy_share", recorded)  # this process's only: a worker imports its own
    at = datetime.combine(DAY1, time(15, 40), tzinfo=KST)
    with simulator_process(start=at, stocks=12, log_path=tmp_path / "simulator.log") as base:
        upgrade(schema_url)
        settings = Settings(
            database_url=schema_url, data_dir=tmp_path, broker_base_url=base,
            local_master_key_path=tmp_path / "master.key", scan_location=str(tmp_path / "scans"),
            temp_token_ttl_seconds=3600, worker_processes=processes, batch_size=2,
        )  # fmt: skip
        clock = ShiftedClock.starting_at(at)
        db = Database(schema_url)
        access = GatewayAccess(settings, db, clock=clock)
        set_runtime(Runtime(settings, db, clock, access))
        try:
            admin = Admin(base)
            secrets: list[str] = []
            accounts = await _register(access, admin, db, secrets)
            payload = _scan(admin, at)

            state = await evening_signal_and_buy(
                trading_day=DAY1, scan_payload=payload, collect_fills=False, return_state=True
            )
            result = await state.result()
            assert state.is_completed(), state.message
            # Five accounts on two processes: shares of three (this process) and two (a worker process).
            assert here == [(f"worker{i}", accounts[i]) for i in range(3)]
            assert access._gateways, "the flow's own process sent no orders"
            with db.unit_of_work() as s:
                sent = s.execute(
                    sa.select(OrderIntentRow.id, OrderIntentRow.user_id, OrderIntentRow.account_no,
                              OrderIntentRow.order_no)
                    .where(OrderIntentRow.trading_day == DAY1, OrderIntentRow.side == Side.BUY)
                ).all()  # fmt: skip
                told = s.execute(
                    sa.select(UserNotice.user_id, UserNotice.item).where(
                        UserNotice.kind == "BUY_ORDERS_PLACED"
                    )
                ).all()
            at_broker = _broker_orders(base, accounts)
            assert result["orders"] == len(sent) == len(at_broker) >= USERS
            assert sorted((a, n) for _, _, a, n in sent) == at_broker
            assert {a for a, _ in at_broker} == set(accounts) and result["accounts_with_errors"] == 0
            # every user told of each of their orders, once, by whichever process placed them
            assert sorted(told) == sorted((u, f"order:{i}") for i, u, _, _ in sent)

            # The worker's share one task run, and under each share its batches' steps (batches of two:
            # two chains in the first share, one in the second).
            runs = await settled_task_runs(state.state_details.flow_run_id)
            place = [r for r in runs if r.name.startswith("buy_share")]
            assert len(place) == 1 and all(r.state and r.state.is_completed() for r in place)
            for step in ("retrieve_broker_tokens", "check_risk", "place_orders"):
                steps = [r for r in runs if r.name.startswith(step)]
                assert len(steps) == 3 and all(r.state and r.state.is_completed() for r in steps), step
            # The run's logs hold no app key or secret.
            logs = await logs_of([state.state_details.flow_run_id])
            assert logs
            assert not [line for line in logs if any(secret in line for secret in secrets)]

            again = await evening_signal_and_buy(trading_day=DAY1, scan_payload=payload, collect_fills=False)
            assert again["orders"] == len(sent)  # reported as they stand
            assert _broker_orders(base, accounts) == at_broker
        finally:
            set_runtime(None)
            await asyncio.to_thread(db.dispose)


async def test_a_clock_worker_processes_cannot_share_is_refused_up_front(tmp_path: Path) -> None:
    from flows.common import in_worker_processes
    from tasks.trading import place_buy_orders

    settings = Settings(
        database_url="postgresql+psycopg2://nobody@127.0.0.1:5432/none", data_dir=tmp_path,
        local_master_key_path=tmp_path / "master.key", worker_processes=2,
    )  # fmt: skip
    db = Database(settings.database_url)  # never connected: the refusal comes first
    set_runtime(Runtime(settings, db, lambda: datetime.now(KST), GatewayAccess(settings, db)))
    try:
        with pytest.raises(TypeError, match="cannot share this runtime's clock"):
            await in_worker_processes(place_buy_orders, [{"batch_id": 1}, {"batch_id": 2}])
    finally:
        set_runtime(None)
        db.dispose()
