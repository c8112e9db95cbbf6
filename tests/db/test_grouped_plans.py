"""Accounts' plans written together (autotrade/store/batch.py's Grouped, autotrade/trading/buys.py's
write_plans) against a real PostgreSQL: the plans of accounts prepared at once share transactions, each
account gets exactly its own rows and ids, and a plan another run already holds fails alone."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from autotrade.config import Settings
from autotrade.domain.models import LimitKind, SignalStatus, SkipReason
from autotrade.domain.orders import IntentStatus
from autotrade.domain.risk import BuyPlan, PlannedBuy, SkippedSignal
from autotrade.store.batch import Grouped
from autotrade.store.db import Database
from autotrade.store.models import Account, OrderIntentRow, TradingSignal, User
from autotrade.trading.buys import AccountRef, BuyService, write_plans
from autotrade.trading.orders import OrderService

pytestmark = pytest.mark.postgres

DAY = date(2026, 11, 27)
CODES = ("005930", "000660", "035420")


def _clock() -> datetime:
    return datetime(2026, 11, 27, 6, 40, tzinfo=UTC)


def _service(db: Database, tmp_path: Path) -> BuyService:
    settings = Settings(database_url=db.url, data_dir=tmp_path)
    return BuyService(db, OrderService(db, _clock), settings, _clock)


def _accounts(db: Database, n: int) -> list[AccountRef]:
    refs = [AccountRef(f"u{i}", f"{i + 1:010d}") for i in range(n)]
    with db.unit_of_work() as s:
        s.add_all([User(user_id=r.user_id) for r in refs])
        s.flush()
        s.add_all([Account(account_no=r.account_no, user_id=r.user_id) for r in refs])
    return refs


def _plan(i: int) -> BuyPlan:
    """Account ``i``'s plan: three buys whose quantities say whose they are, one skip."""
    buys = tuple(
        PlannedBuy(code, f"stock {code}", 9.0, 10_000, 100 * i + n + 1, LimitKind.PER_STOCK)
        for n, code in enumerate(CODES)
    )
    return BuyPlan(buys, (SkippedSignal("068270", "stock 068270", 5.0, 1_000, SkipReason.LOW_SCORE),))


def _stored(db: Database) -> tuple[dict[int, OrderIntentRow], dict[int, TradingSignal]]:
    with db.unit_of_work() as s:
        intents = {r.id: r for r in s.scalars(sa.select(OrderIntentRow))}
        signals = {r.id: r for r in s.scalars(sa.select(TradingSignal))}
        s.expunge_all()
    return intents, signals


async def test_plans_prepared_at_once_share_transactions_and_each_gets_its_own_rows(
    db: Database, tmp_path: Path
) -> None:
    service = _service(db, tmp_path)
    refs = _accounts(db, 40)
    recorded = await asyncio.gather(
        *(service._record_plan(r, DAY, _plan(i), None) for i, r in enumerate(refs))
    )
    grouped = db.grouped(write_plans, "account plans")
    assert isinstance(grouped, Grouped)
    assert grouped.calls == 40
    assert grouped.batches <= 3  # one transaction, or a few while the first was out; not forty
    intents, signals = _stored(db)
    assert len(intents) == 40 * 3
    for i, (ref, found) in enumerate(zip(refs, recorded, strict=True)):
        assert found is not None
        skips, to_send = found
        assert skips == [("068270", SkipReason.LOW_SCORE.value)]
        assert [(c, q, p, s) for _, c, q, p, s in to_send] == [
            (code, 100 * i + n + 1, 10_000, IntentStatus.NEW) for n, code in enumerate(CODES)
        ]
        for intent_id, code, quantity, _, _ in to_send:  # the ids handed back are this account's rows
            row = intents[intent_id]
            assert (row.account_no, row.user_id, row.code, row.quantity) == (
                ref.account_no, ref.user_id, code, quantity,
            )  # fmt: skip
            signal = signals[row.signal_id or 0]  # each intent linked to its own signal
            mine = (ref.account_no, code, quantity)
            assert (signal.account_no, signal.code, signal.target_quantity) == mine
            assert signal.status is SignalStatus.ORDERED
    skipped = [s for s in signals.values() if s.status is SignalStatus.SKIPPED]
    assert sorted(s.account_no for s in skipped) == sorted(r.account_no for r in refs)


async def test_a_plan_another_run_holds_fails_alone_and_the_others_are_written_once(
    db: Database, tmp_path: Path
) -> None:
    """Account 7 was planned by another run a moment before: the group holding its second plan is refused
    (the intents' unique keys) and written again plan by plan; account 7 keeps the first plan (its
    _record_plan says None: read it), every other account's plan is written once."""
    service = _service(db, tmp_path)
    refs = _accounts(db, 20)
    first = await service._record_plan(refs[7], DAY, _plan(500), None)
    assert first is not None
    recorded = await asyncio.gather(
        *(service._record_plan(r, DAY, _plan(i), None) for i, r in enumerate(refs))
    )
    grouped = db.grouped(write_plans, "account plans")
    assert isinstance(grouped, Grouped)
    assert grouped.calls > 21  # the refused group's plans went again, one by one
    assert recorded[7] is None
    assert all(found is not None for n, found in enumerate(recorded) if n != 7)
    intents, _ = _stored(db)
    assert len(intents) == 20 * 3
    by_account: dict[str, list[int]] = {}
    for row in intents.values():
        by_account.setdefault(row.account_no, []).append(row.quantity)
    assert sorted(by_account[refs[7].account_no]) == [50_001, 50_002, 50_003]  # the first plan stands
    for i, ref in enumerate(refs):
        if i != 7:
            assert sorted(by_account[ref.account_no]) == [100 * i + 1, 100 * i + 2, 100 * i + 3]


async def test_a_group_whose_connection_was_lost_fails_its_plans_and_the_next_group_works(
    db: Database, tmp_path: Path
) -> None:
    """Its commit may have happened: every plan of the group fails (OperationalError, which the evening's
    tasks retry: the retry reads the plan if it stands), none is written twice, and later plans go."""
    service = _service(db, tmp_path)
    refs = _accounts(db, 6)
    grouped = db.grouped(write_plans, "account plans")
    assert isinstance(grouped, Grouped)

    async def lost(tx: object, plans: list[object]) -> list[list[int]]:
        raise ConnectionResetError("the server went away")

    real, grouped._write = grouped._write, lost  # type: ignore[assignment]
    results = await asyncio.gather(
        *(service._record_plan(r, DAY, _plan(i), None) for i, r in enumerate(refs[:3])),
        return_exceptions=True,
    )
    assert all(isinstance(r, sa.exc.OperationalError) for r in results), results
    assert grouped.calls == 3  # not run again one by one
    grouped._write = real
    after = await asyncio.gather(
        *(service._record_plan(r, DAY, _plan(i), None) for i, r in enumerate(refs[3:]))
    )
    assert all(a is not None for a in after)
    intents, _ = _stored(db)
    assert len(intents) == 3 * 3
