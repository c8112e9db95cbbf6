"""A named lease in the database: one process at a time holds it and renews it before it expires; any other
process may take it over once it has expired. The intraday price watch holds one, so that a scheduled run
finding a live watch leaves at once, and one finding a dead watch (its process killed, its machine gone)
takes over.

Each step is one conditional statement that commits by itself, atomic on SQLite and PostgreSQL alike:

1. acquire: ``UPDATE ... SET holder = me WHERE name = n AND (holder = me OR expires_at <= now)``; one row
   changed means the lease is ours. Else ``INSERT`` the row: it did not exist and now it is ours, or someone
   else's insert won (a unique key violation) and it is theirs. Else it is held: say by whom, until when.
2. renew: ``UPDATE ... SET expires_at = now + ttl WHERE name = n AND holder = me``; no row changed means
   another process took the lease over (we were silent too long) and the holder must stop.
3. release: the same condition; the lease expires now, so a successor needs not wait, and ``watched_until``
   records a watch that ended normally.

Times are the wall clock in UTC: whether a process is alive is a matter of wall time, even when the market's
clock is a simulator's.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from autotrade.store.db import Database
from autotrade.store.models import WatcherLease
from autotrade.store.types import utcnow

T = cast(sa.Table, WatcherLease.__table__)


@dataclass(frozen=True, slots=True)
class LeaseState:
    acquired: bool
    holder: str
    expires_at: datetime
    watched_until: datetime | None


def process_holder() -> str:
    """A holder name unique to this process and this run: host, process id and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    def __init__(
        self, db: Database, name: str, ttl: timedelta, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.db = db
        self.name = name
        self.ttl = ttl
        self.clock = clock

    def acquire(self, holder: str) -> LeaseState:
        now = self.clock()
        with self.db.statement() as conn:
            taken = conn.execute(
                sa.update(T)
                .where(T.c.name == self.name, sa.or_(T.c.holder == holder, T.c.expires_at <= now))
                .values(holder=holder, acquired_at=now, expires_at=now + self.ttl)
            ).rowcount
            if not taken:
                try:
                    conn.execute(
                        sa.insert(T).values(
                            name=self.name, holder=holder, acquired_at=now, expires_at=now + self.ttl
                        )
                    )
                    taken = 1
                except IntegrityError:
                    taken = 0
            row = conn.execute(
                sa.select(T.c.holder, T.c.expires_at, T.c.watched_until).where(T.c.name == self.name)
            ).one()
        return LeaseState(
            acquired=bool(taken) and row.holder == holder,
            holder=row.holder,
            expires_at=row.expires_at,
            watched_until=row.watched_until,
        )

    def state(self) -> LeaseState | None:
        with self.db.statement() as conn:
            row = conn.execute(
                sa.select(T.c.holder, T.c.expires_at, T.c.watched_until).where(T.c.name == self.name)
            ).first()
        if row is None:
            return None
        return LeaseState(False, row.holder, row.expires_at, row.watched_until)

    def renew(self, holder: str) -> bool:
        """Whether the lease is still ours (now for another ``ttl``)."""
        now = self.clock()
        with self.db.statement() as conn:
            changed = conn.execute(
                sa.update(T)
                .where(T.c.name == self.name, T.c.holder == holder)
                .values(expires_at=now + self.ttl)
            ).rowcount
        return bool(changed)

    def release(self, holder: str, watched_until: datetime | None = None) -> bool:
        values: dict[str, object] = {"expires_at": self.clock()}
        if watched_until is not None:
            values["watched_until"] = watched_until
        with self.db.statement() as conn:
            changed = conn.execute(
                sa.update(T).where(T.c.name == self.name, T.c.holder == holder).values(**values)
            ).rowcount
        return bool(changed)
