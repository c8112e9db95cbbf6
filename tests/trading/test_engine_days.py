"""Several simulated trading days for several users, against the simulator over HTTP, on SQLite and
PostgreSQL: limits, traceability, tiers against the price path, agreement with the broker, and a mid-day
restart that reconciles."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path

import pytest
import sqlalchemy as sa

from autotrade.domain.exits import StrategyStatus
from autotrade.domain.krx import KST
from autotrade.domain.models import Side, SignalStatus, Tier
from autotrade.sim.server import RunningSimulator, running_simulator
from autotrade.store.models import OrderIntentRow, ThreeTierStrategy, TradeRecordRow, TradingSignal
from tests.trading import checks
from tests.trading.harness import Trader, World, make_world

D1, D2, D3, D4 = date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 26)
CODES = [f"{100_000 + i * 10:06d}" for i in range(12)]


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    start = datetime.combine(D1, time(15, 0), tzinfo=KST)
    with running_simulator(seed=7, start=start, volatility=0.003, after_hours_fill_rate=0.8) as s:
        s.admin.add_stocks(
            [
                {"code": c, "name": f"종목{i}", "prev_close": p}
                for i, (c, p) in enumerate(zip(CODES, [
                    4_150, 8_900, 12_350, 23_400, 48_750, 61_200, 98_500, 152_000, 7_770, 33_050, 505_000,
                    1_980,
                ], strict=True))
            ]
        )  # fmt: skip
        yield s


TRADERS = [
    Trader("kim", "5001000011", 50_000_000, 10_000_000),
    Trader("lee", "5001000022", 3_000_000, 2_500_000),  # cash binds
    Trader("park", "5001000033", 80_000_000, 1_500_000),  # her own daily limit binds
    Trader("park", "5001000044", 20_000_000, 4_000_000),  # a second account of the same user
]


def world(sim: RunningSimulator, db_url: str, tmp_path: Path) -> World:
    return make_world(sim, db_url, tmp_path, TRADERS, max_stock_count=4, max_per_stock=1_000_000)


def scores(n: int, offset: float) -> list[float]:
    return [round(9.6 - offset - 0.35 * i, 2) for i in range(n)]


def force(
    w: World,
    tier: Tier,
    exclude: set[int],
    *,
    preserved_too: bool = False,
    codes_taken: set[str] | None = None,
) -> int | None:
    """Move one open position's stock through ``tier``'s trigger (returns the strategy id). With
    ``preserved_too``, a position whose preserve already sold may be chosen too (its stop still watches).
    A stock in ``codes_taken`` is not chosen (another tier has moved it this round: moving it again would
    undo that), and the chosen stock is added to it."""
    watching = [StrategyStatus.ACTIVE] + ([StrategyStatus.PRESERVE_TRIGGERED] if preserved_too else [])
    with w.db.unit_of_work() as s:
        rows = s.scalars(
            sa.select(ThreeTierStrategy)
            .where(ThreeTierStrategy.status.in_(watching))
            .order_by(ThreeTierStrategy.id)
        ).all()
        taken = codes_taken if codes_taken is not None else set()
        target = next(
            (r for r in rows if r.id not in exclude and r.code not in taken and r.held_quantity > 1), None
        )
        if target is None:
            return None
        price = {
            Tier.STOP_LOSS: target.stop_loss_price - 1,
            Tier.PRESERVE: target.preserve_price,
            Tier.TAKE_PROFIT: target.take_profit_price + 1,
        }[tier]
        code, sid = target.code, target.id
    taken.add(code)
    w.sim.admin.set_price(code, price)
    return sid


async def run_days(w: World) -> None:
    await w.evening(D1, w.scan_for(CODES[:8], scores(8, 0)))
    forced: set[int] = set()
    for day, scan in ((D2, CODES[4:12]), (D3, CODES[:6])):
        await w.trading_session(day, until=time(10, 0))
        # Each tier once on its own stock, so every tier is seen whatever the random walk did (an hour of it
        # may have closed every position by a stop, or none by a take-profit).
        moved: set[str] = set()
        for tier in (Tier.STOP_LOSS, Tier.PRESERVE, Tier.TAKE_PROFIT):
            sid = force(w, tier, forced, codes_taken=moved)
            if sid is not None:
                forced.add(sid)
        await w.watch_once(day)
        await w.trading_session(day, until=time(13, 0))
        force(w, Tier.TAKE_PROFIT, set(), preserved_too=True)
        await w.watch_once(day)
        await w.trading_session(day)
        await w.close_day(day)
        await w.evening(day, w.scan_for(scan, scores(len(scan), 0.2)))
    await w.trading_session(D4)
    await w.close_day(D4)


@pytest.mark.slow
async def test_several_days_several_users(sim: RunningSimulator, db_url: str, tmp_path: Path) -> None:
    w = world(sim, db_url, tmp_path)
    try:
        await run_days(w)
        assert checks.limits(w) == []
        assert checks.traceability(w) == []
        assert checks.tiers_follow_prices(w) == []
        assert checks.agreement(w) == []
        with w.db.unit_of_work() as s:
            buys = s.scalars(sa.select(OrderIntentRow).where(OrderIntentRow.side == Side.BUY)).all()
            sells = s.scalars(sa.select(OrderIntentRow).where(OrderIntentRow.side == Side.SELL)).all()
            tiers = {x.tier for x in sells if x.filled_quantity > 0}
            signals = s.scalars(sa.select(TradingSignal)).all()
            records = s.scalars(sa.select(TradeRecordRow)).all()
            strategies = s.scalars(sa.select(ThreeTierStrategy)).all()
        assert len({b.account_no for b in buys}) == len(TRADERS)
        assert tiers == {Tier.STOP_LOSS, Tier.PRESERVE, Tier.TAKE_PROFIT}
        # Skips carry their reason: scores below 7.0, and limits that bound.
        reasons = {
            sg.skip_reason.value for sg in signals if sg.status is SignalStatus.SKIPPED and sg.skip_reason
        }
        assert "LOW_SCORE" in reasons
        assert len(reasons) >= 2
        # Positions open at the real average fill price; trade records carry P&L after costs.
        filled = [b for b in buys if b.filled_quantity]
        for st in strategies:
            b = next(x for x in filled if x.key == st.buy_intent_key)
            assert st.quantity == b.filled_quantity
            assert st.entry_price == (2 * b.filled_amount + b.filled_quantity) // (2 * b.filled_quantity)
        # A sell's P&L: what it sold for, less the entry cost of the shares sold, the sell's own fee and tax
        # (as the broker charged them), and the buy fee on that entry cost, worked out here: 0.015 % is
        # 15 / 100,000, truncated to the won. E.g. 10 shares entered at 48,750: cost 487,500, buy fee
        # 487,500 * 15 // 100,000 = 73 (73.125 truncated).
        sold = [r for r in records if r.profit_loss is not None]
        assert sold
        for r in sold:
            st = next(x for x in strategies if x.id == r.strategy_id)
            cost = st.entry_price * r.quantity
            buy_fee = cost * 15 // 100_000
            assert r.profit_loss == r.amount - cost - r.fee - r.tax - buy_fee, (r.amount, cost, r.fee, r.tax)
        # The after-hours session fills part of some orders (fill rate 0.8): those open at what filled.
        assert any(0 < b.filled_quantity < b.quantity for b in buys)
    finally:
        await w.access.aclose()


@pytest.mark.slow
async def test_mid_day_restart_reconciles(sim: RunningSimulator, db_url: str, tmp_path: Path) -> None:
    """A sell is sent and its answer never recorded (the process dies right after the broker call); a new
    process rebuilds the book, adopts the order from the broker's inquiries, and nothing is sent twice."""
    crashed: list[str] = []

    class Crash(Exception):
        pass

    def hook(point: str) -> None:
        if point == "after_broker_call" and not crashed:
            crashed.append(point)
            raise Crash(point)

    # A calmer market than the other test's (0.3 % a second is some 18 % an hour, and every position may
    # have exited by 10:00, leaving none to crash a stop on): about 3 % an hour, no jumps.
    sim.engine.volatility, sim.engine.jump_probability = 0.0005, 0.0
    w = world(sim, db_url, tmp_path)
    try:
        await w.evening(D1, w.scan_for(CODES[:8], scores(8, 0)))
        await w.trading_session(D2, until=time(10, 0))
        w.crash_hook = hook
        w.restart()
        sid = force(w, Tier.STOP_LOSS, set(), preserved_too=True)
        assert sid is not None
        with pytest.raises(Crash):
            await w.watch_once(D2)
        assert crashed == ["after_broker_call"]
        w.crash_hook = None
        w.restart()
        reports = await w.reconcile_all(D2)
        assert any("SUBMITTING -> ACCEPTED" in r for rep in reports for r in rep.repaired)
        await w.trading_session(D2)
        await w.close_day(D2)
        assert checks.traceability(w) == []
        assert checks.agreement(w) == []
        assert checks.tiers_follow_prices(w) == []
        with w.db.unit_of_work() as s:
            st = s.get_one(ThreeTierStrategy, sid)
            assert st.held_quantity == 0 and st.status is StrategyStatus.STOPPED
    finally:
        await w.access.aclose()
