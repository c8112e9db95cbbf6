"""The evening's buys fanned out over a work pool (``AUTOTRADE_EVENING_FANOUT=deployment``), as an operator
with several machines runs them: a Prefect server on PostgreSQL (a database of its own), a process work pool
and two ``prefect worker start`` processes taking one run at a time, the place-buys deployment, the simulator
in its own process over HTTP, the product's database on PostgreSQL. The evening starts a child run per share
of three accounts; once the first of a share's orders is at the broker, the worker running that share dies
with everything it started (SIGKILL to its process group and its run's: a machine lost). The evening finds
the share's lease expired, marks the child Crashed, starts the share again, the other worker finishes it,
the evening ends Completed, and every buy reached the broker exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import subprocess
import sys
import time as wall
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from pydantic import SecretStr

from autotrade.access import GatewayAccess
from autotrade.config import Settings
from autotrade.demo.stack import enable_auto_trading
from autotrade.domain.krx import KST
from autotrade.runtime import Runtime, ShiftedClock, set_runtime
from autotrade.sim.server import Admin, simulator_process
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import OrderIntentRow
from autotrade.vault.registration import register_user_api
from flows.evening_signal_and_buy import evening_signal_and_buy
from flows.place_buys import place_buys
from tests.conftest import fresh_schema
from tests.flows.conftest import DAY1, free_port, other_prefect_api, wait_for_prefect_server

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "autotrade-fanout-test"
SHARE = 3  # accounts per child run: two shares of three users
BUYS = 5  # per user: five stocks at the per-key pace (1/s, burst 2) keep a share busy a few seconds


async def _register(access: GatewayAccess, admin: Admin, db: Database, users: int) -> list[str]:
    accounts = []
    for i in range(users):
        user, account = f"fan{i}", f"{6_200_000_000 + i:010d}"
        admin.create_account(account, user, 50_000_000)
        key = admin.create_appkey(account)
        await register_user_api(
            access.gateway(), user, SecretStr(key["appkey"]), SecretStr(key["secretkey"]), account,
            daily_limit=9_000_000,
        )  # fmt: skip
        accounts.append(account)
    await access.aclose()  # its client belongs to this loop
    enable_auto_trading(db, [f"fan{i}" for i in range(users)])
    return accounts


def _scan(admin: Admin, at: datetime, rows: int) -> dict[str, Any]:
    stocks = admin.stocks()
    codes = sorted((c for c, s in stocks.items() if 5_000 <= s["price"] <= 200_000), key=str)[:rows]
    return {
        "trading_day": at.date().isoformat(), "generated_at": at.replace(minute=36).isoformat(),
        "scan_results": [
            {"code": c, "name": stocks[c]["name"], "score": 9.0 - i / 10, "current_price": stocks[c]["price"],
             "reasons": ["거래량 급증"]}
            for i, c in enumerate(codes)
        ],
    }  # fmt: skip


@pytest.fixture
def schema_url(pg_url: str) -> Iterator[str]:
    with fresh_schema(pg_url) as url:
        yield url


@pytest.fixture
def prefect_on_postgres(pg_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """``prefect server start`` on a PostgreSQL database of its own; the environment to reach it."""
    name = f"prefect_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    db = sa.engine.make_url(pg_url).set(drivername="postgresql+asyncpg", database=name)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    base = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200"}  # fmt: skip
    server_env = {**base, "PREFECT_API_URL": "", "PREFECT_UI_ENABLED": "false",
                  "PREFECT_SERVER_DATABASE_CONNECTION_URL": db.render_as_string(hide_password=False),
                  }  # fmt: skip
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=server_env,
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_prefect_server(api, server, tmp_path / "server.log", 90)
        yield {**base, "PREFECT_API_URL": api}
    finally:
        _stop(server)
        log.close()
        with admin.connect() as conn:
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for task in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int(task.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(task.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, out, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _runs_flow_run(pid: int, run_id: str) -> bool:
    with contextlib.suppress(OSError):
        return f"PREFECT__FLOW_RUN_ID={run_id}".encode() in Path(f"/proc/{pid}/environ").read_bytes()
    return False


def _kill_machine(worker: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's process group and the groups of every process it started (a flow run's process
    has a session of its own): nothing it ran survives, nothing reports to Prefect."""
    groups = {worker.pid}
    for pid in _descendants(worker.pid):
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    worker.wait(timeout=10)


def _orders_at_broker(base: str, accounts: list[str]) -> list[dict[str, Any]]:
    with httpx.Client(base_url=base, timeout=10) as http:
        return [
            {"account": a, **o} for a in accounts for o in http.get(f"/_sim/accounts/{a}").json()["orders"]
        ]


async def _share_runs() -> list[Any]:
    async with get_client() as client:
        d = await client.read_deployment_by_name("place_buys/place-buys")
        return await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[d.id]))
        )


async def _deploy(workers_env: dict[str, str]) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(
            name=POOL, type="process", base_job_template=ProcessWorker.get_default_base_job_template()
        ))  # fmt: skip
    deployment = await place_buys.ato_deployment(
        name="place-buys", work_pool_name=POOL,
        job_variables={"command": f"{sys.executable} -m tests.flows.fanout_engine", "working_dir": str(ROOT),
                       "env": {"AUTOTRADE_TEST_RUNTIME": workers_env["AUTOTRADE_TEST_RUNTIME"]}},
    )  # fmt: skip
    await deployment.apply()  # type: ignore[misc]


async def test_a_share_whose_worker_died_is_finished_by_the_other_worker_each_buy_once(
    prefect_on_postgres: dict[str, str], schema_url: str, tmp_path: Path
) -> None:
    started = wall.monotonic()
    at = datetime.combine(DAY1, time(15, 40), tzinfo=KST)
    env = prefect_on_postgres
    with simulator_process(start=at, stocks=12, log_path=tmp_path / "simulator.log") as base:
        async with other_prefect_api(env["PREFECT_API_URL"]):
            upgrade(schema_url)
            settings = Settings(
                database_url=schema_url, data_dir=tmp_path, broker_base_url=base,
                local_master_key_path=tmp_path / "master.key", scan_location=str(tmp_path / "scans"),
                temp_token_ttl_seconds=3600, order_settle_seconds=3, evening_fanout="deployment",
                evening_fanout_share_size=SHARE, evening_fanout_lease_seconds=8,
                evening_fanout_poll_seconds=0.5,
            )  # fmt: skip
            clock = ShiftedClock.starting_at(at)
            runtime_file = tmp_path / "runtime.pickle"
            runtime_file.write_bytes(pickle.dumps((settings, clock)))
            workers_env = {
                **env, "AUTOTRADE_TEST_RUNTIME": str(runtime_file), "PREFECT_WORKER_QUERY_SECONDS": "1",
                "PREFECT_WORKER_PREFETCH_SECONDS": "1",
            }  # fmt: skip
            await _deploy(workers_env)
            workers = {}
            for name in ("w1", "w2"):
                log = (tmp_path / f"{name}.log").open("wb")
                workers[name] = subprocess.Popen(  # noqa: ASYNC220 - started once, not waited on
                    [PREFECT, "worker", "start", "--pool", POOL, "--name", name, "--limit", "1",
                     "--install-policy", "never"],
                    env=workers_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            db = Database(schema_url)
            access = GatewayAccess(settings, db, clock=clock)
            set_runtime(Runtime(settings, db, clock, access))
            try:
                admin = Admin(base)
                accounts = await _register(access, admin, db, 2 * SHARE)
                payload = _scan(admin, at, BUYS)

                evening: asyncio.Task[Any] = asyncio.create_task(evening_signal_and_buy(  # type: ignore[arg-type]
                    trading_day=DAY1, scan_payload=payload, collect_fills=False, return_state=True
                ))  # fmt: skip
                killed, crashed_run = await _kill_one_mid_share(workers, base, evening, tmp_path)
                state = await asyncio.wait_for(evening, 150)
                result = await state.result()
                assert state.is_completed(), (state.message, _logs(tmp_path))
                assert result["orders"] == 2 * SHARE * BUYS and result["accounts_with_errors"] == 0, result

                # Every buy at the broker once: one order per account and stock, each the intent's own.
                at_broker = _orders_at_broker(base, accounts)
                assert len(at_broker) == 2 * SHARE * BUYS
                assert set(Counter((o["account"], o["code"]) for o in at_broker).values()) == {1}
                with db.unit_of_work() as s:
                    sent = sorted(str(n) for n in s.scalars(sa.select(OrderIntentRow.order_no)).all())
                assert sent == sorted(o["order_no"] for o in at_broker)

                # The share's first run Crashed (marked so by the evening), its second Completed on the other
                # worker; the other share's one run Completed. Each is a subflow run of the evening's.
                runs = await _share_runs()
                by_share: dict[str, list[Any]] = {}
                for r in sorted(runs, key=lambda r: r.created):
                    by_share.setdefault(r.parameters["share"], []).append(r)
                crashed = next(r for r in runs if str(r.id) == crashed_run)
                again = by_share[crashed.parameters["share"]]
                assert [r.state.type.value for r in again] == ["CRASHED", "COMPLETED"], again
                other = next(n for n in workers if n != killed)
                assert str(again[1].id) in (tmp_path / f"{other}.log").read_text(errors="replace")
                assert sorted(len(v) for v in by_share.values()) == [1, 2]
                assert all(r.parent_task_run_id is not None for r in runs)
            finally:
                set_runtime(None)
                for w in workers.values():
                    if w.poll() is None:
                        _stop(w)
                await asyncio.to_thread(db.dispose)
    print(f"fan-out test: {wall.monotonic() - started:.1f} s")


async def _kill_one_mid_share(
    workers: dict[str, subprocess.Popen[bytes]], base: str, evening: asyncio.Task[Any], folder: Path
) -> tuple[str, str]:
    """Wait for a running share with some but not all of its orders at the broker; kill its worker."""
    deadline = wall.monotonic() + 120
    while wall.monotonic() < deadline:
        assert not evening.done(), "the evening ended before a share could be interrupted"
        for run in await _share_runs():
            if run.state is None or not run.state.is_running():
                continue
            accounts = [a for _, a in run.parameters["accounts"]]
            placed = len(await asyncio.to_thread(_orders_at_broker, base, accounts))
            if not 0 < placed < len(accounts) * BUYS:
                continue
            for name, worker in workers.items():
                if any(_runs_flow_run(p, str(run.id)) for p in _descendants(worker.pid)):
                    _kill_machine(worker)
                    return name, str(run.id)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no share was seen mid-way: {_logs(folder)}")


def _logs(folder: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted(folder.glob("w*.log"))
    )
