"""The flows' notices to every user go through ``tasks.notifications._send_new``: more users than the
notifier's queue holds, over a slow channel, and every user is told once (recorded in ``user_notices`` and
delivered), none dropped, when it runs on a thread that may wait, as the flows run it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import sqlalchemy as sa

from autotrade.config import Settings
from autotrade.notify import Notification
from autotrade.notify.messages import OrderLine, buy_orders_placed
from autotrade.runtime import Runtime, build_notifier, set_runtime
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import NotificationFailure, User, UserNotice
from tasks.notifications import _send_new

DAY = date(2026, 11, 27)
USERS = [f"bulk{i:02d}" for i in range(12)]


@dataclass
class SlowConsole:
    """The console channel at a rate-limited API's pace: the queue fills faster than it drains."""

    channel: str = "console"
    told: list[str] = field(default_factory=list)

    def send(self, notification: Notification, to: str | None = None) -> None:
        time.sleep(0.02)
        self.told.append(str(notification.audience))


def test_every_user_is_told_though_the_queue_holds_two(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/bulk.db"
    upgrade(url)
    db = Database(url)
    with db.unit_of_work() as s:
        s.add_all([User(user_id=u) for u in USERS])
    settings = Settings(database_url=url, data_dir=tmp_path, notify_queue_size=2)
    console = SlowConsole()
    notifier = build_notifier(settings, db, notifiers=[console])
    set_runtime(Runtime(settings, db, lambda: datetime.now(UTC), None, notifier=notifier))  # type: ignore[arg-type]
    try:
        items = {u: [(f"order:{i}", OrderLine("005930", "삼성전자", 1, 71_000))] for i, u in enumerate(USERS)}

        async def evening() -> int:  # as the flows call it: from the event loop, through a thread
            return await asyncio.to_thread(
                _send_new,
                "BUY_ORDERS_PLACED",
                DAY,
                items,
                lambda u, ls: buy_orders_placed(u, ls, datetime.now(UTC)),
            )

        assert asyncio.run(evening()) == len(USERS)
        assert notifier.flush(10)  # type: ignore[attr-defined]
        assert sorted(console.told) == [f"user:{u}" for u in USERS]
        assert notifier.dropped == 0  # type: ignore[attr-defined]
        with db.unit_of_work() as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(UserNotice)) == len(USERS)
            assert s.scalar(sa.select(sa.func.count()).select_from(NotificationFailure)) == 0
    finally:
        set_runtime(None)
        notifier.close()  # type: ignore[attr-defined]
        db.dispose()
