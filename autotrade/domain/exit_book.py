"""An index of armed exits so a price tick touches only the positions whose level it crosses.

Per stock, two heaps: stops as a max-heap (fire when price <= stop) and the next upper level (preserve while
it is owed, else take-profit) as a min-heap (fire when price >= level). A tick that crosses nothing costs a
dictionary look-up and two peeks, whatever the number of armed positions. Entries are invalidated lazily by a
version number; a strategy with nothing free to sell (its sell is working) is parked until the fill or the
order's end re-indexes it, and a committed exit (stop or take-profit already fired, shares left unsold) sits
in a per-stock set that every tick visits.

The book decides nothing itself: every candidate goes through :meth:`ExitStrategy.apply`, so the state
machine stays the single source of truth (a property test checks the book against a naive loop).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import count
from typing import Generic, TypeVar

from autotrade.domain.exits import ExitEvent, ExitStrategy, PriceTick, SellIntent, TierStatus
from autotrade.domain.models import Tier

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class _StockIndex(Generic[K]):
    lower: list[tuple[int, int, K, int]] = field(default_factory=list)  # (-stop, seq, key, version)
    upper: list[tuple[int, int, K, int]] = field(default_factory=list)  # (level, seq, key, version)
    committed: set[K] = field(default_factory=set)


def upper_level(s: ExitStrategy) -> int | None:
    """The next price at or above which the strategy sells: preserve while owed, else take-profit."""
    owed = s.preserve_target - s.preserve_sold - s.in_flight[Tier.PRESERVE]
    if owed > 0 and s.tiers[Tier.PRESERVE] in (TierStatus.ACTIVE, TierStatus.TRIGGERED):
        return s.prices.preserve
    if s.tiers[Tier.TAKE_PROFIT] is TierStatus.ACTIVE:
        return s.prices.take_profit
    return None


class ExitBook(Generic[K]):
    def __init__(self) -> None:
        self._strategies: dict[K, ExitStrategy] = {}
        self._versions: dict[K, int] = {}
        self._stocks: dict[str, _StockIndex[K]] = {}
        self._seq = count()

    def __len__(self) -> int:
        return len(self._strategies)

    def __contains__(self, key: K) -> bool:
        return key in self._strategies

    def __iter__(self) -> Iterator[tuple[K, ExitStrategy]]:
        return iter(self._strategies.items())

    def get(self, key: K) -> ExitStrategy:
        return self._strategies[key]

    def add(self, key: K, strategy: ExitStrategy) -> None:
        if key in self._strategies:
            raise KeyError(f"{key!r} is already in the book")
        self._strategies[key] = strategy
        self._versions[key] = 0
        self._index(key)

    def remove(self, key: K) -> ExitStrategy:
        strategy = self._strategies.pop(key)
        self._versions.pop(key)
        idx = self._stocks.get(strategy.code)
        if idx is not None:
            idx.committed.discard(key)
        return strategy

    def on_price(self, code: str, price: int, at: datetime) -> list[tuple[K, SellIntent]]:
        """Feed one trade price; returns the sell intents it fires, with the strategy keys."""
        idx = self._stocks.get(code)
        if idx is None:
            return []
        candidates = set(idx.committed)
        while idx.lower and -idx.lower[0][0] >= price:
            _, _, key, version = heapq.heappop(idx.lower)
            if self._versions.get(key) == version:
                candidates.add(key)
        while idx.upper and idx.upper[0][0] <= price:
            _, _, key, version = heapq.heappop(idx.upper)
            if self._versions.get(key) == version:
                candidates.add(key)
        out: list[tuple[K, SellIntent]] = []
        tick = PriceTick(price, at)
        for key in sorted(candidates, key=repr) if len(candidates) > 1 else candidates:
            out.extend((key, intent) for intent in self._strategies[key].apply(tick))
            self._index(key)
        return out

    def apply(self, key: K, event: ExitEvent) -> list[SellIntent]:
        """Apply a non-price event (fill, order ended, day end, holding sync) and re-index."""
        intents = self._strategies[key].apply(event)
        self._index(key)
        return intents

    def _index(self, key: K) -> None:
        s = self._strategies[key]
        version = self._versions[key] + 1
        self._versions[key] = version
        idx = self._stocks.setdefault(s.code, _StockIndex[K]())
        idx.committed.discard(key)
        if s.is_closed or s.free <= 0:
            return
        if s.committed:
            idx.committed.add(key)
            return
        if s.tiers[Tier.STOP_LOSS] is TierStatus.ACTIVE:
            heapq.heappush(idx.lower, (-s.prices.stop_loss, next(self._seq), key, version))
        level = upper_level(s)
        if level is not None:
            heapq.heappush(idx.upper, (level, next(self._seq), key, version))
