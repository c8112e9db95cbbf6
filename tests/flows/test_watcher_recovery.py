"""The price watch comes back by itself: the intraday flow runs in its own OS process over the simulator and a
file database (SQLite, or PostgreSQL), is killed with SIGKILL at a random moment of the session, and the
runs the schedule keeps starting (every 3 minutes in prefect.yaml; every 2 s here) find its lease dead and
take over: a stop crossed after the kill still sells, even when the price is back above it by then. A run
that finds the watch alive leaves at once. The lease's own rules are tested on both databases, and the broker
block carries the market-data key.

Run as a module (``python -m tests.flows.test_watcher_recovery START ORIGIN``) it is the process a
scheduled run is: the runtime from the environment's settings, on the simulator's clock, and the real flow.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import subprocess
import sys
import time as walltime
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from autotrade.access import GatewayAccess, simulator_market_data_key
from autotrade.domain.krx import KST
from autotrade.domain.models import Side, Tier
from autotrade.runtime import Runtime, ShiftedClock, build_notifier, set_runtime
from autotrade.sim.server import RunningSimulator, running_simulator
from autotrade.store.db import Database
from autotrade.store.leases import Lease
from autotrade.store.migrate import upgrade
from autotrade.store.models import OrderIntentRow, ThreeTierStrategy
from tasks.exits import watch_prices
from tests.flows.conftest import DAY1, DAY2

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
TTL, RENEW, SCHEDULE_EVERY = 3.0, 1.0, 2.0  # production: 20 s, 5 s, 3 minutes


def test_lease_is_held_renewed_and_taken_over_only_when_expired(db_url: str) -> None:
    upgrade(db_url)
    db = Database(db_url)
    now = [datetime(2026, 11, 19, 1, 0, tzinfo=UTC)]
    lease = Lease(db, "intraday", timedelta(seconds=20), clock=lambda: now[0])
    try:
        first = lease.acquire("a")
        assert first.acquired and first.holder == "a"
        assert first.expires_at == now[0] + timedelta(seconds=20)
        now[0] += timedelta(seconds=15)
        assert lease.renew("a")  # now good until +35 s
        now[0] += timedelta(seconds=19)
        other = lease.acquire("b")
        assert not other.acquired and other.holder == "a"  # 1 s left: still a's
        now[0] += timedelta(seconds=1)
        taken = lease.acquire("b")  # expired exactly now: b takes over
        assert taken.acquired and taken.holder == "b"
        assert not lease.renew("a"), "the old holder must learn it lost the lease"
        assert not lease.release("a")
        end = datetime(2026, 11, 19, 6, 30, tzinfo=UTC)
        assert lease.release("b", watched_until=end)
        state = lease.state()
        assert state is not None and state.watched_until == end and state.expires_at == now[0]
        assert lease.acquire("c").acquired  # released: no wait for a successor
    finally:
        db.dispose()


@dataclass
class Run:
    """One scheduled run of the intraday flow in its own process."""

    proc: subprocess.Popen[bytes]
    out: Path
    started: float = field(default_factory=walltime.monotonic)

    def result(self) -> dict[str, Any] | None:
        lines = [ln for ln in self.out.read_text(errors="replace").splitlines() if ln.startswith("RESULT ")]
        return json.loads(lines[-1][7:]) if lines else None


class Schedule:
    """Starts runs as the deployment's schedule would: the same flow, no parameters, a new process each."""

    def __init__(self, tmp: Path, env: dict[str, str], clock: ShiftedClock) -> None:
        self.tmp, self.env, self.clock = tmp, env, clock
        self.runs: list[Run] = []

    def start(self) -> Run:
        out = self.tmp / f"run{len(self.runs)}.log"
        args = [self.clock.start.isoformat(), repr(self.clock.origin)]
        with out.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.flows.test_watcher_recovery", *args],
                cwd=ROOT, env=self.env, stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        run = Run(proc, out)
        self.runs.append(run)
        return run

    def stop_all(self) -> None:
        for run in self.runs:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait(10)


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    start = datetime.combine(DAY1, time(15, 0), tzinfo=KST)
    # Prices stand still unless the test moves them: only the crossing below can fire a tier.
    still = {"volatility": 0.0, "jump_probability": 0.0, "gap_volatility": 0.0}
    with running_simulator(seed=11, start=start, **still) as s:
        s.admin.add_stocks([{"code": "005930", "name": "삼성전자", "prev_close": 70_000}])
        yield s


def _sells(sim: RunningSimulator, account: str, code: str) -> list[dict[str, Any]]:
    orders = sim.admin.account(account)["orders"]
    return [o for o in orders if o["side"] == "SELL" and o["code"] == code and o["trade_type"] == "3"]


async def test_a_killed_watcher_is_replaced_and_the_stop_still_sells(
    prefect_server: None, sim: RunningSimulator, db_url: str, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    from tests.trading.harness import Trader, make_world

    trader = Trader("watcher1", "5200000001", 30_000_000, 5_000_000)
    world = make_world(sim, db_url, tmp_path, [trader], access="gateway", temp_token_ttl_seconds=3600)
    try:
        await world.evening(DAY1, world.scan_for(["005930"], [9.0]))
        with world.db.unit_of_work() as s:
            (strategy,) = s.scalars(sa.select(ThreeTierStrategy)).all()
            stop, held = strategy.stop_loss_price, strategy.held_quantity
        assert held > 0 and 0 < stop < 70_000
    finally:
        await world.aclose()

    # 10:00 on day two; from here the simulator's clock passes with the wall clock, and so does the runs'.
    world.at(DAY2, time(10, 0))
    sim.admin.set_clock(speed=1.0)
    clock = ShiftedClock(sim.engine.now(), walltime.monotonic())
    key = simulator_market_data_key(sim.base_url)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUTOTRADE_")},
        "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PREFECT_HOME": str(tmp_path / "prefect"),
        "AUTOTRADE_DATABASE_URL": db_url, "AUTOTRADE_DATA_DIR": str(tmp_path),
        "AUTOTRADE_LOCAL_MASTER_KEY_PATH": str(tmp_path / "master.key"),
        "AUTOTRADE_BROKER_BASE_URL": sim.base_url, "AUTOTRADE_BROKER_RATE_PER_SECOND": "1000",
        "AUTOTRADE_BROKER_BURST": "1000", "AUTOTRADE_TEMP_TOKEN_TTL_SECONDS": "3600",
        "AUTOTRADE_MARKET_DATA_APP_KEY": key.app_key.get_secret_value(),
        "AUTOTRADE_MARKET_DATA_APP_SECRET": key.app_secret.get_secret_value(),
        "AUTOTRADE_WATCHER_LEASE_SECONDS": str(TTL), "AUTOTRADE_WATCHER_RENEW_SECONDS": str(RENEW),
        "AUTOTRADE_RECONCILE_EVERY_MINUTES": "1",
    }  # fmt: skip
    schedule = Schedule(tmp_path, env, clock)
    db = Database(db_url)
    lease = Lease(db, "intraday", timedelta(seconds=TTL))
    rng = random.Random()
    try:
        first = schedule.start()
        deadline = walltime.monotonic() + 90
        while not (sim.simulator._sockets and any(s.codes for s in sim.simulator._sockets)):
            assert first.proc.poll() is None, first.out.read_text()[-3000:]
            assert walltime.monotonic() < deadline, "the first watcher never subscribed"
            await asyncio.sleep(0.1)
        state = lease.state()
        assert state is not None and state.expires_at > datetime.now(UTC)

        # A scheduled run while the watch is alive: a quick no-op.
        extra = schedule.start()
        assert await asyncio.to_thread(extra.proc.wait, 60) == 0, extra.out.read_text()[-3000:]
        noop = extra.result()
        assert noop is not None and noop.get("skipped") == "watched by another process", noop
        assert noop["holder"] == state.holder
        noop_seconds = walltime.monotonic() - extra.started

        pause = rng.uniform(0.0, 4.0)  # a random moment of the watched session
        await asyncio.sleep(pause)
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
        assert first.proc.returncode == -signal.SIGKILL

        # The stop is crossed while nobody watches, and the price comes back above it before anyone does:
        # the run that takes over reads the day's low from the broker's quote. Runs keep coming every
        # SCHEDULE_EVERY seconds, each once the one before has left (in production a no-op run lasts seconds
        # and they come 3 minutes apart).
        crossed_at = walltime.monotonic()
        sim.admin.set_price("005930", stop - 500)
        sim.admin.set_price("005930", 70_000)
        next_run, current = crossed_at, None
        while not _sells(sim, trader.account_no, "005930"):
            now = walltime.monotonic()
            assert now - crossed_at < 150, [r.out.read_text()[-2000:] for r in schedule.runs[2:]]
            if now >= next_run and (current is None or current.proc.poll() is not None):
                current = schedule.start()
                next_run = now + SCHEDULE_EVERY
            await asyncio.sleep(0.05)
        gap = walltime.monotonic() - crossed_at

        (sell,) = _sells(sim, trader.account_no, "005930")
        assert sell["quantity"] == held and sell["filled"] == held
        takers = [r for r in schedule.runs[2:] if r.proc.poll() is None]
        assert len(takers) >= 1
        after = lease.state()
        assert after is not None and after.holder != state.holder
        taker_start = takers[0].started - crossed_at
        print(
            f"\nwatcher killed {pause:.1f} s into the watch; stop crossed -> sell {gap:.1f} s, the run that "
            f"took over started {taker_start:.1f} s after the crossing "
            f"(lease {TTL:g} s, a run every {SCHEDULE_EVERY:g} s, {len(schedule.runs) - 2} runs started; "
            f"a no-op run's process lasted {noop_seconds:.1f} s)"
        )
        # The sell is the product's stop-loss exit, recorded as such.
        with db.unit_of_work() as s:
            intent = s.scalars(sa.select(OrderIntentRow).where(OrderIntentRow.side == Side.SELL)).one()
        assert intent.tier is Tier.STOP_LOSS and intent.order_no == sell["order_no"]
    finally:
        schedule.stop_all()
        db.dispose()
        world.db.dispose()


def _runtime(settings: Any, db: Database, clock: Any, access: Any, notes: io.StringIO) -> Runtime:
    from autotrade.notify import ConsoleNotifier

    notifier = build_notifier(settings, db, [ConsoleNotifier(notes)])
    return Runtime(settings, db, clock, access, notifier=notifier)


async def test_the_watch_tells_the_operator_when_it_polls_and_when_the_feed_is_back(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """The simulator's market stands still at 10:00 (no trade prints), so the feed is silent: after 0.5 s the
    watch polls quotes and the operator hears of it; a trade brings the feed back, and the operator hears
    that too. The watch ends at ``until`` on a clock that passes with the wall clock."""
    from tests.trading.harness import Trader, make_world

    trader = Trader("watcher2", "5200000002", 30_000_000, 5_000_000)
    url = f"sqlite:///{tmp_path / 'watch.db'}"
    world = make_world(sim, url, tmp_path, [trader], access="gateway", temp_token_ttl_seconds=3600)
    try:
        await world.evening(DAY1, world.scan_for(["005930"], [9.0]))
    finally:
        await world.aclose()
    world.at(DAY2, time(10, 0))
    settings = world.settings.model_copy(update={"feed_silence_seconds": 0.5, "quote_poll_seconds": 0.2})
    clock = ShiftedClock(sim.engine.now(), walltime.monotonic())
    access = GatewayAccess(settings, world.db, clock=clock)
    notes = io.StringIO()
    rt = _runtime(settings, world.db, clock, access, notes)
    set_runtime(rt)

    async def trade_once_polling() -> None:
        while "polling quotes" not in notes.getvalue():  # noqa: ASYNC110 - the notice is what we wait for
            await asyncio.sleep(0.05)
        sim.admin.set_price("005930", 70_100)

    try:
        mover = asyncio.create_task(trade_once_polling())
        result = await watch_prices.fn(DAY2, until=clock() + timedelta(seconds=8))
        await asyncio.wait_for(mover, 5)  # the polling notice came (else this times out)
        assert rt.notifier.flush(5)  # type: ignore[attr-defined]
    finally:
        set_runtime(None)
        await access.aclose()
        world.db.dispose()
    text = notes.getvalue()
    assert result["ticks"] >= 2 and result["sells_fired"] == 0
    assert "price feed silent" in text and "price feed ticking again" in text
    assert text.index("price feed silent") < text.index("price feed ticking again")


async def test_no_market_data_key_stops_the_watch_loudly(tmp_path: Path, caplog: Any) -> None:
    """A real broker (Kiwoom's mock host) and no market-data key: the watch refuses to start with a user's
    key, the operator is told what to set, and the lease is let go so the next run can start at once."""
    from autotrade.access import MarketDataKeyMissing
    from autotrade.config import BrokerEnv, Settings

    url = f"sqlite:///{tmp_path / 'nokey.db'}"
    upgrade(url)
    settings = Settings(
        database_url=url, data_dir=tmp_path, broker_env=BrokerEnv.MOCK, local_master_key_path=tmp_path / "k",
    )  # fmt: skip
    db = Database(url)
    clock = ShiftedClock.starting_at(datetime.combine(DAY2, time(10, 0), tzinfo=KST))
    access = GatewayAccess(settings, db, clock=clock)
    notes = io.StringIO()
    rt = _runtime(settings, db, clock, access, notes)
    set_runtime(rt)
    try:
        with pytest.raises(MarketDataKeyMissing):
            await watch_prices.fn(DAY2, until=clock() + timedelta(minutes=5))
        assert rt.notifier.flush(5)  # type: ignore[attr-defined]
        state = Lease(db, "intraday", timedelta(seconds=20)).state()
    finally:
        set_runtime(None)
        await access.aclose()
        db.dispose()
    assert "AUTOTRADE_MARKET_DATA_APP_KEY" in notes.getvalue() and "ERROR" in notes.getvalue()
    assert any("AUTOTRADE_MARKET_DATA_APP_KEY" in r.getMessage() for r in caplog.records)
    assert state is not None and state.expires_at <= datetime.now(UTC)


def test_the_broker_block_carries_the_market_data_key(prefect_server: None) -> None:
    from pydantic import SecretStr

    from autotrade.config import Settings
    from blocks.autotrade_blocks import BROKER_BLOCK, KiwoomBroker, settings_from_blocks

    block = KiwoomBroker(market_data_app_key=SecretStr("MDKEY"), market_data_app_secret=SecretStr("MDSECRET"))
    block.save(BROKER_BLOCK, overwrite=True)
    try:
        settings = settings_from_blocks(Settings())
        assert settings.market_data_app_key is not None and settings.market_data_app_secret is not None
        assert settings.market_data_app_key.get_secret_value() == "MDKEY"
        assert settings.market_data_app_secret.get_secret_value() == "MDSECRET"
    finally:
        KiwoomBroker.delete(BROKER_BLOCK)


def _scheduled_run(start: str, origin: str) -> None:
    """The process a scheduled run is: settings from the environment, the market's clock, the real flow
    with no parameters (the day is the clock's)."""
    from autotrade.config import get_settings
    from autotrade.runtime import build_runtime, set_runtime
    from flows.intraday_reconcile import intraday_reconcile

    clock = ShiftedClock(datetime.fromisoformat(start), float(origin))
    set_runtime(build_runtime(get_settings(), clock))
    result = asyncio.run(intraday_reconcile())
    print("RESULT " + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    _scheduled_run(*sys.argv[1:3])
