"""Per-app-key, per-api-id token buckets.

Kiwoom limits each app key to about one request per second per TR with a burst of two (KIWOOM.md section
10). One bucket per (key, api-id) pair lets many users' work run concurrently while no key ever goes
faster than its own budget; buckets never share a lock, so a busy key cannot delay another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Limit:
    rate_per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate_per_second <= 0 or self.burst < 1:
            raise ValueError("a limit needs a positive rate and a burst of at least 1")


@dataclass(slots=True)
class TokenBucket:
    """A bucket that hands out reservations: a caller that finds it empty sleeps until its own slot.

    Reserving before sleeping (rather than looping until a token appears) makes waiters FIFO and needs no
    lock: the read-modify-write below has no ``await`` in it.
    """

    limit: Limit
    clock: Clock = time.monotonic
    _tokens: float = field(init=False)
    _updated: float = field(init=False)

    def __post_init__(self) -> None:
        self._tokens = float(self.limit.burst)
        self._updated = self.clock()

    def reserve(self) -> float:
        """Take one token; return how long the caller must wait before using it."""
        now = self.clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.limit.burst), self._tokens + elapsed * self.limit.rate_per_second)
        self._updated = now
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.limit.rate_per_second

    def refund(self) -> None:
        """Give back a reservation that was never used (its caller was cancelled while waiting)."""
        self._tokens = min(float(self.limit.burst), self._tokens + 1.0)

    async def acquire(self) -> None:
        wait = self.reserve()
        if wait <= 0:
            return
        try:
            await asyncio.sleep(wait)
        except asyncio.CancelledError:
            self.refund()
            raise


class RateLimiter:
    """Token buckets keyed by (app key id, api-id), created on first use.

    ``overrides`` sets a different limit for particular api-ids (for example if orders turn out to have
    their own budget); every other api-id gets ``default``.
    """

    def __init__(
        self,
        default: Limit = Limit(1.0, 2),
        *,
        overrides: Mapping[str, Limit] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.default = default
        self.overrides = dict(overrides or {})
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def bucket(self, key_id: str, api_id: str) -> TokenBucket:
        found = self._buckets.get((key_id, api_id))
        if found is None:
            limit = self.overrides.get(api_id, self.default)
            found = self._buckets[(key_id, api_id)] = TokenBucket(limit, self._clock)
        return found

    async def acquire(self, key_id: str, api_id: str) -> None:
        await self.bucket(key_id, api_id).acquire()

    def forget(self, key_id: str) -> None:
        """Drop a key's buckets (the key was disabled or deleted)."""
        for pair in [p for p in self._buckets if p[0] == key_id]:
            del self._buckets[pair]
