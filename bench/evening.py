"""The evening flow end to end at scale: Prefect (a temporary server), the simulator (its own process,
over real HTTP), PostgreSQL, the vault gateway; and, in the same run, the raw client loop for comparison.

    python bench/evening.py --users 1000 [--signals 10] [--raw-accounts 500] [--processes 2] [--raw-first]
    python bench/evening.py --users 100 --fanout deployment --workers 2

Every user registers a simulated Kiwoom account through the vault (setup, not timed). The timed part is one
run of ``evening_signal_and_buy`` at 15:40 on a 10-row scan (after-hours-at-close buys; the 16:00 fill
collection is not part of it; the users are told of their orders, by every process that placed them, on the
console channel, written to nothing meanwhile), its accounts shared among ``--processes`` worker processes (by
default as the product shares them: ``AUTOTRADE_WORKER_PROCESSES=auto``; ``processes_used`` says how many), or
with ``--fanout deployment`` sent as child runs of the place-buys deployment, one share per worker, to
``--workers`` ``prefect worker start`` processes of a process work pool (one run at a time each). Then the raw
loop: the bare ``KiwoomSession`` placing the same number of orders per account for ``--raw-accounts`` accounts
with the same concurrency and per-key rate limits, nothing else (no database, no gateway, no Prefect).

Each side has a simulator of its own, fresh (same seed, same stocks, the same accounts and keys): the raw
loop never meets an order book the flow has grown, nor the other way round. ``--raw-first`` runs the raw
loop before the flow (the default runs it after); run both orders and report both. Prints one JSON
object: users, orders, seconds, orders_per_second, raw_orders, raw_seconds, raw_orders_per_second, ratio
(flow rate / raw rate), order, and the CPU each side's work cost per order: ``flow_cpu_ms_per_order`` (the
flow's process and its worker processes, or with the fan-out the Prefect workers and every run process they
started, from their start-up to their exit; not the simulator, PostgreSQL or the Prefect server) and
``raw_cpu_ms_per_order`` (the raw loop's process), from the OS's accounting (``getrusage`` and
``/proc/<pid>/stat``), user plus system time; ``services_cpu_ms_per_order`` the same for what the flow's
orders went through meanwhile: its simulator, the Prefect server, PostgreSQL (every server process: run it
on an otherwise idle database server). On a shared machine the CPU figures are the steadier ones.

Needs PostgreSQL on 127.0.0.1:5432 (database ``test`` to create a scratch database in;
AUTOTRADE_BENCH_PG_ADMIN_URL overrides). Everything stays on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import date, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

import sqlalchemy as sa

from autotrade.domain.calendar import previous_trading_day
from autotrade.domain.krx import KST
from autotrade.sim.server import Admin, simulator_process

PG_ADMIN_URL = os.environ.get(
    "AUTOTRADE_BENCH_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds (user + system) this process has used so far, all its threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu(exclude: set[int]) -> float:
    """CPU seconds of this process's children, except ``exclude``: those already reaped (getrusage) plus
    the live ones (their /proc stat, with their own reaped children)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = r.ru_utime + r.ru_stime
    for pid in live_children() - exclude:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile: counted once reaped
        total += sum(int(f) for f in fields[11:15]) / CLOCK_TICKS  # utime, stime, cutime, cstime
    return total


def live_children() -> set[int]:
    me = str(os.getpid())
    found = set()
    for task in Path("/proc").glob("[0-9]*"):
        try:
            if task.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                found.add(int(task.name))
        except (OSError, IndexError):
            continue
    return found


def services_cpu(sim_port: str) -> dict[str, float]:
    """CPU seconds so far of the services the flow's orders go through (not the flow's own): the flow's
    simulator, the Prefect server, and PostgreSQL (every server process, and those already ended through
    the postmaster's reaped-children times)."""
    found = {"simulator": 0.0, "prefect_server": 0.0, "postgresql": 0.0}
    for task in Path("/proc").glob("[0-9]*"):
        try:
            stat = task.joinpath("stat").read_text()
            cmdline = task.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm, rest = stat.split("(", 1)[1].rsplit(")", 1)
        fields = rest.split()
        own = sum(int(f) for f in fields[11:13]) / CLOCK_TICKS  # utime, stime
        if comm == "postgres":
            reaped = sum(int(f) for f in fields[13:15]) / CLOCK_TICKS if fields[1] == "1" else 0.0
            found["postgresql"] += own + reaped
        elif "sim serve" in cmdline and f"--port {sim_port}" in cmdline:
            found["simulator"] += own
        elif "prefect.server.api.server:create_app" in cmdline:
            found["prefect_server"] += own
    return found


def log(msg: str) -> None:
    print(f"[evening bench] {msg}", file=sys.stderr, flush=True)


def scratch_database() -> tuple[str, Callable[[], None]]:
    name = f"autotrade_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        raise SystemExit(f"PostgreSQL is needed at {PG_ADMIN_URL}: {exc.orig}") from None
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()

    return url, drop


async def register(stack: Any, admin: Admin, users: int, cash: int, limit: int) -> list[dict[str, str]]:
    """Accounts at the simulator and their keys through the vault's registration (validated, sealed)."""
    from pydantic import SecretStr

    from autotrade.demo.stack import enable_auto_trading
    from autotrade.vault.registration import register_user_api

    gateway = stack.gateway()
    sem = asyncio.Semaphore(64)
    keys: list[dict[str, str]] = []
    started = time.monotonic()

    async def one(i: int) -> None:
        user, account = f"bench{i:05d}", f"{7_000_000_000 + i:010d}"
        await asyncio.to_thread(admin.create_account, account, user, cash)
        key = await asyncio.to_thread(admin.create_appkey, account)
        async with sem:
            await register_user_api(
                gateway, user, SecretStr(key["appkey"]), SecretStr(key["secretkey"]), account,
                daily_limit=limit,
            )  # fmt: skip
        keys.append({"user": user, **key})
        if len(keys) % 500 == 0:
            log(f"registered {len(keys)}/{users} users ({time.monotonic() - started:.0f} s)")

    await asyncio.gather(*(one(i) for i in range(users)))
    await stack.aclose()  # its HTTP client belongs to this event loop
    enable_auto_trading(stack.db, [k["user"] for k in keys])
    return keys


def scan_payload(admin: Admin, day: date, signals: int) -> dict[str, Any]:
    stocks = admin.stocks()
    affordable = sorted((c for c, s in stocks.items() if 5_000 <= s["price"] <= 150_000), key=str)[:signals]
    if len(affordable) < signals:
        raise SystemExit(f"only {len(affordable)} affordable stocks for {signals} signals; raise --stocks")
    return {
        "trading_day": day.isoformat(),
        "generated_at": datetime.combine(day, datetime.min.time(), tzinfo=KST).replace(hour=15, minute=36)
        .isoformat(),
        "scan_results": [
            {"code": c, "name": stocks[c]["name"], "score": round(9.5 - i * 0.1, 1),
             "current_price": int(stocks[c]["price"]), "reasons": ["거래량 급증"]}
            for i, c in enumerate(affordable)
        ],
    }  # fmt: skip


async def raw_loop(
    base_url: str, keys: list[dict[str, str]], codes: list[str], settings: Any, clock: Callable[[], datetime]
) -> tuple[int, float, float]:
    """The same orders through the bare client: per-key tokens first (not timed), then the orders."""
    from pydantic import SecretStr

    from autotrade.broker import Credentials, KiwoomClient, KiwoomSession, TokenManager, TradeType
    from autotrade.broker.errors import BrokerError

    client = KiwoomClient(
        base_url, timeout=settings.broker_timeout_seconds, rate_per_second=settings.broker_rate_per_second,
        burst=settings.broker_burst,
    )  # fmt: skip
    sessions = []
    for k in keys:

        async def creds(k: dict[str, str] = k) -> Credentials:
            return Credentials(app_key=SecretStr(k["appkey"]), app_secret=SecretStr(k["secretkey"]))

        key_id = f"raw:{k['account_no']}"
        # Token expiry is on the simulator's clock, as in the flow.
        sessions.append(KiwoomSession(client, key_id, TokenManager(client, key_id, creds, clock=clock)))
    await asyncio.gather(*(s.deposit() for s in sessions))  # tokens issued, connections warm
    sem = asyncio.Semaphore(settings.account_concurrency * max(1, len(keys) // settings.batch_size))

    async def account(s: KiwoomSession) -> int:
        async with sem:
            for c in codes:
                # An order never sent (no connection in time) is sent again, as the flow's retries would.
                for attempt in range(5):
                    try:
                        await s.buy(c, 1, None, TradeType.AFTER_HOURS_CLOSE)
                        break
                    except BrokerError as exc:
                        if not exc.retry_safe or exc.outcome_unknown or attempt == 4:
                            raise
            return len(codes)

    t0, cpu0 = time.perf_counter(), own_cpu()
    placed = sum(await asyncio.gather(*(account(s) for s in sessions)))
    seconds, cpu = time.perf_counter() - t0, own_cpu() - cpu0
    await client.aclose()
    return placed, seconds, cpu


def start_workers(api_url: str, n: int, settings: Any, clock: Any, work: Path) -> list[Any]:
    """A process work pool, the place-buys deployment on it (its runs with this bench's settings and clock,
    as the fan-out test's), and ``n`` workers taking one run at a time, started and polling before the
    timed part."""
    import pickle
    import subprocess

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    from flows.place_buys import place_buys

    root = Path(__file__).resolve().parents[1]
    runtime_file = work / "runtime.pickle"
    runtime_file.write_bytes(pickle.dumps((settings, clock)))
    pool = "autotrade-bench"

    async def deploy() -> None:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(
                name=pool, type="process", base_job_template=ProcessWorker.get_default_base_job_template()
            ), overwrite=True)  # fmt: skip
        deployment = await place_buys.ato_deployment(
            name="place-buys", work_pool_name=pool,
            job_variables={"command": f"{sys.executable} -m tests.flows.fanout_engine",
                           "working_dir": str(root), "env": {"AUTOTRADE_TEST_RUNTIME": str(runtime_file)}},
        )  # fmt: skip
        await deployment.apply()  # type: ignore[misc]

    asyncio.run(deploy())
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_WORKER_PREFETCH_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "INFO"}  # fmt: skip
    prefect = str(Path(sys.executable).with_name("prefect"))
    workers = []
    for i in range(n):
        command = [prefect, "worker", "start", "--pool", pool, "--name", f"bench-{i}", "--limit", "1",
                   "--install-policy", "never"]  # fmt: skip
        out = (work / f"worker-{i}.log").open("wb")
        workers.append(subprocess.Popen(command, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 120
    while not all("started" in (work / f"worker-{i}.log").read_text(errors="replace") for i in range(n)):
        if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
            raise SystemExit(f"the workers did not start (logs in {work})")
        time.sleep(0.5)
    log(f"{n} workers polling the work pool {pool}")
    return workers


@contextlib.contextmanager
def stdout_to_null() -> Iterator[None]:
    """This process's standard output (file descriptor 1, which the processes it starts meanwhile inherit)
    goes nowhere while the block runs."""
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def wait_for_run_processes(workers: list[Any], seconds: float = 30) -> None:
    """Until the workers' run processes have exited (and been counted in their workers' CPU)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_has_children(w.pid) for w in workers):
        time.sleep(0.2)


def _has_children(pid: int) -> bool:
    for task in Path("/proc").glob("[0-9]*"):
        try:
            if task.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                return True
        except (OSError, IndexError):
            continue
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--signals", type=int, default=10)
    ap.add_argument("--raw-accounts", type=int, default=None, help="accounts in the raw loop (default all)")
    ap.add_argument("--stocks", type=int, default=60)
    ap.add_argument(
        "--processes", default="auto",
        help="worker processes: auto (the product's default: one per core for every 2,000 users), or 1-64 "
        "(1: the flow's own alone)",
    )  # fmt: skip
    ap.add_argument("--raw-first", action="store_true", help="run the raw loop before the flow")
    ap.add_argument("--fanout", choices=("in-process", "deployment"), default="in-process")
    ap.add_argument("--workers", type=int, default=2, help="Prefect workers with --fanout deployment")
    args = ap.parse_args()
    if args.users < 1 or not 1 <= args.signals <= 30:
        ap.error("--users must be positive and --signals between 1 and 30")
    if args.processes != "auto":
        if not args.processes.isdigit() or not 1 <= int(args.processes) <= 64:
            ap.error("--processes must be auto or between 1 and 64")
        args.processes = int(args.processes)

    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from autotrade.access import GatewayAccess
    from autotrade.config import Settings
    from autotrade.runtime import Runtime, ShiftedClock, build_notifier, set_runtime
    from autotrade.store.db import Database
    from autotrade.store.migrate import upgrade
    from autotrade.store.models import OrderIntentRow
    from flows.evening_signal_and_buy import evening_signal_and_buy
    from flows.fanout import planned_processes

    day = previous_trading_day(datetime.now(KST).date())
    at = datetime.combine(day, datetime.min.time(), tzinfo=KST).replace(hour=15, minute=40)
    setup_started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="autotrade-bench-"))
    processes = ExitStack()
    base = processes.enter_context(simulator_process(start=at, stocks=args.stocks, log_path=work / "sim.log"))
    raw_base = processes.enter_context(
        simulator_process(start=at, stocks=args.stocks, log_path=work / "sim-raw.log")
    )
    url, drop = scratch_database()
    server = SubprocessASGIServer()
    try:
        upgrade(url)
        admin = Admin(base)
        settings = Settings(
            database_url=url, data_dir=work, broker_base_url=base, local_master_key_path=work / "master.key",
            scan_location=str(work / "scans"), temp_token_ttl_seconds=3600, worker_processes=args.processes,
            evening_fanout=args.fanout, evening_fanout_share_size=-(-args.users // args.workers),
            evening_fanout_poll_seconds=0.5,
        )  # fmt: skip
        db = Database(url, pool_size=settings.database_pool_size, max_overflow=10)
        # The simulator's clock stands at 15:40; ours moves on from there with the wall clock.
        clock = ShiftedClock.starting_at(at)
        access = GatewayAccess(settings, db, clock=clock)
        # As a worker's runtime is: the users are told of their orders (the console channel, written to
        # nothing while the flow runs: stdout carries this bench's result).
        set_runtime(Runtime(settings, db, clock, access, notifier=build_notifier(settings, db)))
        keys = asyncio.run(register(access, admin, args.users, cash=100_000_000, limit=20_000_000))
        payload = scan_payload(admin, day, args.signals)
        raw_keys = keys[: args.raw_accounts or len(keys)]
        raw_admin = Admin(raw_base)
        for k in raw_keys:  # the same accounts and keys at the raw loop's own simulator (setup, not timed)
            raw_admin.create_account(k["account_no"], k["user"], 100_000_000)
            raw_admin.create_appkey(k["account_no"], k["appkey"], k["secretkey"])
        if scan_payload(raw_admin, day, args.signals)["scan_results"] != payload["scan_results"]:
            raise SystemExit("the two simulators do not list the same stocks")
        codes = [r["code"] for r in payload["scan_results"]]

        def raw() -> tuple[int, float, float]:
            log(f"raw client loop: {len(raw_keys)} accounts x {len(codes)} orders")
            return asyncio.run(raw_loop(raw_base, raw_keys, codes, settings, clock))

        if args.raw_first:
            raw_orders, raw_seconds, raw_cpu = raw()
        log(f"setup done in {time.monotonic() - setup_started:.0f} s; starting a Prefect server")
        server.start(timeout=120)
        workers: list[Any] = []
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            if args.fanout == "deployment":
                workers = start_workers(server.api_url, args.workers, settings, clock, work)

            async def run_flow() -> tuple[dict[str, Any], float]:
                started = time.perf_counter()
                span.append(clock())
                cpu_started[:] = [own_cpu(), children_cpu(not_ours)]
                services_started.update(services_cpu(sim_port))
                try:
                    result = await evening_signal_and_buy(
                        trading_day=day, scan_payload=payload, collect_fills=False
                    )
                finally:
                    await access.aclose()
                span.append(clock())
                for name, cpu in services_cpu(sim_port).items():
                    services_used[name] = cpu - services_started[name]
                return result, time.perf_counter() - started

            log(f"evening flow: {args.users} users x {args.signals} signals")
            # Children alive before the flow (the simulators, the Prefect server) are not the flow's work;
            # worker processes start during the flow.
            not_ours = live_children() - {w.pid for w in workers}
            cpu_started: list[float] = []
            sim_port = base.rsplit(":", 1)[1]
            services_started: dict[str, float] = {}
            services_used: dict[str, float] = {}
            span: list[datetime] = []  # the flow's start and end, on the market's clock
            with stdout_to_null():  # the users' notices, on the console channel (worker processes too)
                if os.environ.get("AUTOTRADE_BENCH_PROFILE"):
                    import cProfile

                    prof = cProfile.Profile()
                    result, seconds = prof.runcall(asyncio.run, run_flow())
                    prof.dump_stats(os.environ["AUTOTRADE_BENCH_PROFILE"])
                else:
                    result, seconds = asyncio.run(run_flow())
            wait_for_run_processes(workers)
            flow_cpu = own_cpu() - cpu_started[0] + children_cpu(not_ours) - cpu_started[1]
            for w in workers:  # their CPU is counted above; a worker slow to stop is killed
                w.terminate()
                try:
                    w.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    log(f"a Prefect worker (pid {w.pid}) did not stop within 30 s of SIGTERM; killed")
                    w.kill()
                    w.wait(timeout=30)
        for statement in db.batch_statements():
            log(f"{statement!r}: {statement.calls} calls in {statement.batches} batches")
        with db.unit_of_work() as s:
            sent = s.scalar(sa.select(sa.func.count()).where(OrderIntentRow.order_no.is_not(None))) or 0
            # claims are stamped on the market's clock, as the flow's start and end are here
            first, last = s.execute(
                sa.select(sa.func.min(OrderIntentRow.submitted_at), sa.func.max(OrderIntentRow.submitted_at))
            ).one()
        if first is not None and last is not None and len(span) == 2:
            log(f"first order claimed {(first - span[0]).total_seconds():.1f} s into the flow, the last one "
                f"{(span[1] - last).total_seconds():.1f} s before its end")  # fmt: skip
        orders = int(result["orders"])
        if sent != orders:
            raise SystemExit(f"the flow reported {orders} orders but {sent} reached the broker")
        log(f"flow: {orders} orders in {seconds:.1f} s ({orders / seconds:.1f}/s)")
        if not args.raw_first:
            raw_orders, raw_seconds, raw_cpu = raw()
        flow_rate = orders / seconds if seconds else 0.0
        raw_rate = raw_orders / raw_seconds if raw_seconds else 0.0
        print(json.dumps({
            "users": args.users, "signals": args.signals, "orders": orders, "seconds": round(seconds, 2),
            "orders_per_second": round(flow_rate, 1), "raw_orders": raw_orders,
            "raw_seconds": round(raw_seconds, 2), "raw_orders_per_second": round(raw_rate, 1),
            "ratio": round(flow_rate / raw_rate, 3) if raw_rate else None,
            "flow_cpu_ms_per_order": round(flow_cpu * 1000 / orders, 3) if orders else None,
            "raw_cpu_ms_per_order": round(raw_cpu * 1000 / raw_orders, 3) if raw_orders else None,
            "services_cpu_ms_per_order": {
                k: round(v * 1000 / orders, 3) for k, v in services_used.items()
            } if orders else None,
            "accounts_with_errors": result.get("accounts_with_errors"),
            "database": "postgresql", "broker": "simulator (separate process, HTTP)",
            "per_key_rate": settings.broker_rate_per_second, "per_key_burst": settings.broker_burst,
            "batch_size": settings.batch_size, "account_concurrency": settings.account_concurrency,
            "processes": args.processes, "processes_used": planned_processes(settings, args.users),
            "order": "raw first" if args.raw_first else "flow first",
            "fanout": args.fanout, "workers": args.workers if args.fanout == "deployment" else None,
            "simulators": "one fresh simulator per side",
        }))  # fmt: skip
    finally:
        set_runtime(None)
        server.stop()
        processes.close()
        drop()


if __name__ == "__main__":
    main()
