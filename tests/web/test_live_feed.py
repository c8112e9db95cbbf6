"""The live feed's cost does not grow with the number of browsers: one database poll per interval for every
viewer together, one price lookup per watched user (not per viewer), each viewer receives only its own user's
data, and an unchanged snapshot is not sent again. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from autotrade.api.web import LiveHub
from autotrade.domain.exits import TierStatus
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import ConditionalOrder, User
from tests.api.conftest import add_strategy


async def test_one_poll_for_all_viewers_each_sees_only_their_own(db_url: str, tmp_path: Path) -> None:
    upgrade(db_url)
    db = Database(db_url)
    with db.unit_of_work() as s:
        s.add_all([User(user_id="alice", email="a@example.com"), User(user_id="bob", email="b@example.com")])
    add_strategy(db, "alice", "11111111111")
    add_strategy(db, "bob", "22222222222")
    asked: list[tuple[str, list[str]]] = []

    async def prices(user_id: str, codes: list[str]) -> dict[str, int]:
        asked.append((user_id, codes))
        return {c: 73_500 for c in codes}

    hub = LiveHub(db, prices, interval=3600)  # polled by hand below
    alice = [hub.subscribe("alice") for _ in range(5)]
    bob = hub.subscribe("bob")
    await hub.stop()  # the background poller: this test drives poll_once itself
    await hub.poll_once()
    assert hub.polls == 1 and sorted(asked) == [("alice", ["005930"]), ("bob", ["005930"])]

    for viewer, account in [*((v, "11111111111") for v in alice), (bob, "22222222222")]:
        snap = json.loads(viewer.queue.get_nowait())
        (pos,) = snap["positions"]
        assert pos["account_no"] == account
        # 73,500 against the entry 70,000: (73,500 - 70,000) / 70,000 = +5.00 %
        assert pos["current_price"] == 73_500 and pos["profit_rate"] == 5.0
        assert [(t["type"], t["price"], t["status"], t["quantity"]) for t in pos["tiers"]] == [
            ("STOP_LOSS", 66_500, "ACTIVE", 5), ("PRESERVE", 72_800, "EXECUTED", 5),
            ("TAKE_PROFIT", 75_600, "ACTIVE", 5),
        ]  # fmt: skip
        assert viewer.queue.empty()

    # Nothing changed: nothing sent, and prices came from the hub's cache (no new lookup).
    await hub.poll_once()
    assert all(v.queue.empty() for v in [*alice, bob]) and len(asked) == 2

    # Bob's stop-loss fires: only Bob's stream gets a snapshot.
    with db.unit_of_work() as s:
        s.execute(
            sa.update(ConditionalOrder)
            .where(ConditionalOrder.user_id == "bob", ConditionalOrder.order_type == "STOP_LOSS")
            .values(status=TierStatus.EXECUTED)
        )
    await hub.poll_once()
    assert all(v.queue.empty() for v in alice)
    tiers = json.loads(bob.queue.get_nowait())["positions"][0]["tiers"]
    assert tiers[0]["status"] == "EXECUTED"
    assert hub.polls == 3

    for v in [*alice, bob]:
        hub.unsubscribe(v)
    await hub.poll_once()
    assert hub.polls == 3  # no viewer, no poll
    db.dispose()
