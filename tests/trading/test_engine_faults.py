"""Faults and crashes in the order protocol: whatever breaks, re-running ends with every intended order placed
exactly once: none twice, none lost.

Every account is reached through the vault gateway, as in production. Covered: each broker fault kind of
the simulator on the order path (and on the inquiries the reconciliation reads), and a crash at each point
of the order protocol (``CRASH_POINTS``), for buys and for sells.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from autotrade.domain.krx import KST
from autotrade.domain.models import Side, Tier
from autotrade.domain.orders import NEEDS_RECONCILIATION, IntentStatus
from autotrade.runtime import TRADE, Runtime
from autotrade.sim.server import RunningSimulator, running_simulator
from autotrade.store.db import Database
from autotrade.store.models import OrderIntentRow, TradingSignal
from autotrade.trading.orders import CRASH_POINTS
from autotrade.trading.ports import BrokerUnavailable
from tests.trading import checks
from tests.trading.harness import Trader, World, make_world

D1, D2 = date(2026, 11, 23), date(2026, 11, 24)
CODES = ["200010", "200020", "200030", "200040"]
PRICES = [5_120, 18_350, 47_900, 96_200]
TRADERS = [Trader("choi", "6001000011", 20_000_000, 10_000_000)]


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    start = datetime.combine(D1, time(15, 0), tzinfo=KST)
    with running_simulator(
        seed=3, start=start, volatility=0.0005, gap_volatility=0.0, after_hours_fill_rate=1.0
    ) as s:
        s.admin.add_stocks(
            [{"code": c, "name": f"종목{c}", "prev_close": p} for c, p in zip(CODES, PRICES, strict=True)]
        )  # fmt: skip
        yield s


def world(sim: RunningSimulator, db_url: str, tmp_path: Path, **kw: Any) -> World:
    """The account reached as production reaches it: through the vault gateway (temporary tokens, the
    gateway's checks, the sealed broker-token cache), rebuilt with each restarted process."""
    return make_world(sim, db_url, tmp_path, TRADERS, access="gateway", **kw)


def intents(w: World, side: Side) -> list[OrderIntentRow]:
    with w.db.unit_of_work() as s:
        return list(s.scalars(sa.select(OrderIntentRow).where(OrderIntentRow.side == side)).all())


def broker_orders(w: World, side: str) -> list[dict[str, Any]]:
    return [o for o in checks.broker_orders(w)[TRADERS[0].account_no] if o["side"] == side]


async def buy_until_settled(w: World, scan: Any, *, runs: int = 4, in_flight: float = 0.0) -> None:
    """Re-run the evening buys as Prefect's retries (or an operator) would, letting the settle window pass.

    The window passes in virtual time at once, but a delayed request travels in wall time: the wait lets
    ``in_flight`` seconds (the longest delay injected) go by first, as a live settle window (longer than any
    request's time on the wire) does."""
    t = TRADERS[0]
    for _ in range(runs):
        broker = await w.access.for_account(t.ref, TRADE, spend_cap=w.settings.max_daily_investment)
        # A query failing after its retries fails the task, and Prefect runs it again.
        with contextlib.suppress(BrokerUnavailable):
            await w.rt.buys.run_account(t.ref, broker, scan, D1)
        rows = intents(w, Side.BUY)
        if rows and all(i.status not in NEEDS_RECONCILIATION | {IntentStatus.NEW} for i in rows):
            return
        await asyncio.sleep(0.3 + in_flight)  # a delayed request reaches the broker in the meantime
        w.sim.admin.advance(w.settings.order_settle_seconds + 1)


def assert_exactly_once(w: World, side: Side, expected: int) -> None:
    rows = intents(w, side)
    orders = broker_orders(w, side.value)
    assert len(rows) == expected
    assert [r.status for r in rows if r.status in NEEDS_RECONCILIATION | {IntentStatus.NEW}] == []
    assert len(orders) == expected, f"{len(orders)} broker orders for {expected} intents"
    assert sorted(o["order_no"] for o in orders) == sorted(r.order_no for r in rows if r.order_no)
    assert checks.traceability(w) == []


ORDER_FAULTS = [
    ("http_500", {}),
    ("http_429", {}),
    ("latency", {"latency_ms": 50}),
    ("latency", {"latency_ms": 1500}),  # longer than the client's timeout: the order lands after it gave up
    ("drop_after_accept", {}),
    ("token_expiry", {}),
]


@pytest.mark.parametrize(("kind", "options"), ORDER_FAULTS, ids=[f"{k}-{o}" for k, o in ORDER_FAULTS])
async def test_order_faults_place_each_buy_exactly_once(
    sim: RunningSimulator, db_url: str, tmp_path: Path, kind: str, options: dict[str, Any]
) -> None:
    w = world(sim, db_url, tmp_path, broker_timeout_seconds=0.5)
    try:
        w.at(D1, time(15, 40))
        scan = w.scan_for(CODES, [9.5, 9.0, 8.5, 8.0])
        sim.admin.add_fault(kind, path="/api/dostk/ordr", count=2, seed=5, **options)
        await buy_until_settled(w, scan, in_flight=options.get("latency_ms", 0) / 1000)
        fired = sim.admin.faults()["counts"].get(kind, 0)
        sim.admin.clear_faults()
        assert fired >= 1
        assert_exactly_once(w, Side.BUY, len(CODES))
        # And the fills reach positions once the after-hours session is over.
        w.at(D1, time(16, 1))
        await w.reconcile_all(D1)
        assert checks.agreement(w) == []
    finally:
        await w.aclose()


@pytest.mark.parametrize("kind", ["http_500", "http_429", "latency", "token_expiry"])
async def test_inquiry_faults_during_reconciliation(
    sim: RunningSimulator, db_url: str, tmp_path: Path, kind: str
) -> None:
    """The answer of an order is lost and the inquiries the reconciliation reads fail too: retried queries
    still adopt the order, nothing is sent twice."""
    w = world(sim, db_url, tmp_path)
    try:
        w.at(D1, time(15, 40))
        scan = w.scan_for(CODES[:2], [9.5, 9.0])
        sim.admin.add_fault("drop_after_accept", path="/api/dostk/ordr", count=2)
        sim.admin.add_fault(kind, path="/api/dostk/acnt", count=2, latency_ms=50, seed=2)
        await buy_until_settled(w, scan)
        assert sim.admin.faults()["counts"].get(kind, 0) >= 1
        sim.admin.clear_faults()
        assert_exactly_once(w, Side.BUY, 2)
    finally:
        await w.aclose()


class Crash(BaseException):
    """The process dies (BaseException: nothing in the services may swallow it)."""


COVERED: set[str] = set()


@pytest.mark.parametrize("point", CRASH_POINTS)
async def test_crash_at_each_point_buys(
    sim: RunningSimulator, db_url: str, tmp_path: Path, point: str
) -> None:
    crashes: list[str] = []

    def hook(p: str) -> None:
        if p == point and len(crashes) < 2:  # the first two orders die at this point
            crashes.append(p)
            raise Crash(p)

    w = world(sim, db_url, tmp_path)
    try:
        w.at(D1, time(15, 40))
        scan = w.scan_for(CODES, [9.5, 9.0, 8.5, 8.0])
        w.crash_hook = hook
        for _ in range(3):
            w.restart()
            try:
                await buy_until_settled(w, scan, runs=1)
            except Crash:
                continue
        w.crash_hook = None
        w.restart()
        await buy_until_settled(w, scan)
        assert crashes == [point, point]
        assert_exactly_once(w, Side.BUY, len(CODES))
        COVERED.add(f"buy:{point}")
    finally:
        await w.aclose()


@pytest.mark.parametrize("point", CRASH_POINTS)
async def test_crash_at_each_point_sells(
    sim: RunningSimulator, db_url: str, tmp_path: Path, point: str
) -> None:
    """A stop fires and the process dies while sending it: the next process's reconciliation resumes it."""
    w = world(sim, db_url, tmp_path)
    try:
        await w.evening(D1, w.scan_for(CODES[:2], [9.5, 9.0]))
        w.at(D2, time(9, 30))
        w.restart()
        crashes: list[str] = []

        def hook(p: str) -> None:
            if p == point and not crashes:
                crashes.append(p)
                raise Crash(p)

        w.crash_hook = hook
        w.restart()
        with w.db.unit_of_work() as s:
            from autotrade.store.models import ThreeTierStrategy

            st = s.scalars(sa.select(ThreeTierStrategy).order_by(ThreeTierStrategy.id)).first()
            assert st is not None
            code, stop = st.code, st.stop_loss_price
        sim.admin.set_price(code, stop - 500)
        with pytest.raises(Crash):
            await w.watch_once(D2)
        w.crash_hook = None
        sim.admin.advance(w.settings.order_settle_seconds + 1)
        w.restart()
        await w.reconcile_all(D2)
        await w.reconcile_all(D2)
        sells = intents(w, Side.SELL)
        assert [(s.tier, s.status) for s in sells] == [(Tier.STOP_LOSS, IntentStatus.FILLED)]
        assert_exactly_once(w, Side.SELL, 1)
        assert checks.agreement(w) == []
        COVERED.add(f"sell:{point}")
    finally:
        await w.aclose()


def test_the_protocol_has_the_points_these_tests_cover() -> None:
    """The crash tests are parametrised over ``CRASH_POINTS``; this pins the list so that a step added to
    the protocol is seen here (the run prints what was covered: see ``conftest.py``)."""
    assert CRASH_POINTS == ("before_submitting", "after_submitting", "after_broker_call", "after_ack")


async def test_a_timed_out_order_is_not_resent_before_the_settle_window(
    sim: RunningSimulator, db_url: str, tmp_path: Path
) -> None:
    """The client gives up after 0.5 s; the broker accepts the order at 1.5 s. A re-run in between must not
    send it again (that would buy twice); once the window has passed it adopts the order that landed."""
    w = world(sim, db_url, tmp_path, broker_timeout_seconds=0.5)
    try:
        w.at(D1, time(15, 40))
        scan = w.scan_for(CODES[:1], [9.5])
        sim.admin.add_fault("latency", path="/api/dostk/ordr", api_id="kt10000", count=1, latency_ms=1500)
        t = TRADERS[0]
        broker = await w.access.for_account(t.ref, TRADE, spend_cap=w.settings.max_daily_investment)
        first = await w.rt.buys.run_account(t.ref, broker, scan, D1)
        assert first.failed == [(CODES[0], "OutcomeUnknown")]
        again = await w.rt.buys.run_account(t.ref, broker, scan, D1)  # at once: still inside the window
        assert again.failed == [(CODES[0], "unresolved")]
        assert [i.status for i in intents(w, Side.BUY)] == [IntentStatus.UNKNOWN]
        await asyncio.sleep(1.5)
        assert len(broker_orders(w, "BUY")) == 1  # the delayed request did land
        sim.admin.advance(w.settings.order_settle_seconds + 1)
        await w.rt.buys.run_account(t.ref, broker, scan, D1)
        assert_exactly_once(w, Side.BUY, 1)
    finally:
        sim.admin.clear_faults()
        await w.aclose()


async def test_two_runs_of_the_same_account_at_once_place_each_buy_once(
    sim: RunningSimulator, db_url: str, tmp_path: Path
) -> None:
    """A retried batch overlapping the run it retries (or two workers given the same accounts): both plan,
    one plan stands; both walk the intents, and each intent goes to the broker once — the one whose
    ``NEW -> SUBMITTING`` lands sends it."""
    w = world(sim, db_url, tmp_path)
    try:
        w.at(D1, time(15, 40))
        scan = w.scan_for(CODES, [9.5, 9.0, 8.5, 8.0])
        t = TRADERS[0]
        other = Runtime(w.settings, Database(w.db.url), w.now, w.access)  # a second worker process
        broker = await w.access.for_account(t.ref, TRADE, spend_cap=w.settings.max_daily_investment)
        outcomes = await asyncio.gather(
            w.rt.buys.run_account(t.ref, broker, scan, D1), other.buys.run_account(t.ref, broker, scan, D1)
        )
        other.db.dispose()
        assert_exactly_once(w, Side.BUY, len(CODES))
        # Each run reports every buy: placed, or "unresolved" when it found the other run sending it (the
        # gateway paces a key's orders, so the other's send can be in flight); between them all are placed.
        for o in outcomes:
            assert o.skipped == [] and o.error is None, o
            assert {c for c, why in o.failed if why != "unresolved"} == set(), o
            assert sorted([c for c, _, _ in o.placed] + [c for c, _ in o.failed]) == sorted(CODES), o
        assert {c for o in outcomes for c, _, _ in o.placed} == set(CODES)
        with w.db.unit_of_work() as s:
            signals = s.scalar(sa.select(sa.func.count()).select_from(TradingSignal))
        assert signals == len(CODES)  # the losing plan left nothing behind
    finally:
        await w.aclose()
