"""The price watch's source: the operator's real-time feed, with quote polling while the feed is silent.

The protocol, step by step (the code follows it in this order):

1. A code subscribed is registered on the WebSocket feed and quoted once at once (ka10001 through the quote
   session): a watcher that starts, or takes over from a dead one, mid-session sees every code's current
   price straight away, so a stop crossed while nobody watched fires now rather than at the next trade.
2. Every feed tick is passed on and marks the feed alive.
3. A watchdog looks every ``check_seconds``. Silence counts only while the market is expected to trade
   (``expect_ticks``: the continuous session, not the closing auction nor the hours around it); it is
   measured from the later of the last feed tick and the moment trading was expected.
4. Silence longer than ``silence_seconds`` while trading is expected: quotes are polled for every subscribed
   code (at the client's per-key rate, ``poll_seconds`` between rounds) and passed on; ``on_switch`` hears
   ``POLLING``, which the watcher turns into an operator alert.
5. The first feed tick while polling stops the polling; ``on_switch`` hears ``FEED``. The feed reconnects by
   itself all along (:class:`~autotrade.broker.feed.WebSocketPriceFeed`), so its return needs nothing here.
6. Closing closes the watchdog, the polling and the feed.
7. ``gaps`` counts the moments trades may have gone by unseen: the feed's own (every reconnect, every tick
   dropped), every switch (the silence before polling; the sampling while polling lasted), every tick
   dropped here. The price watch reads the day's range again whenever it grows.

Silence is measured on the monotonic clock: a dead socket is a matter of wall time, even when the market's
clock is a simulator's running thousands of times faster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from autotrade.broker.errors import BrokerError
from autotrade.broker.feed import Clock, DropOldestStream, PollingPriceFeed, PriceFeed, PriceTick, QuoteSource
from autotrade.broker.messages import KST, normalise_code
from autotrade.broker.tokens import utc_now

log = logging.getLogger(__name__)


class FeedMode(StrEnum):
    FEED = "feed"
    POLLING = "polling"


@dataclass(frozen=True, slots=True)
class FeedSwitch:
    """The source changed. ``seconds``: how long the feed had been silent (to ``POLLING``) or how long the
    polling lasted (back to ``FEED``)."""

    mode: FeedMode
    seconds: float
    codes: int


class FallbackPriceFeed:
    """A :class:`~autotrade.broker.feed.PriceFeed` over the real-time feed that polls quotes while it is
    silent (see the module's protocol)."""

    def __init__(
        self,
        feed: PriceFeed,
        quotes: QuoteSource,
        *,
        silence_seconds: float,
        poll_seconds: float = 1.0,
        expect_ticks: Callable[[], bool] = lambda: True,
        on_switch: Callable[[FeedSwitch], None] | None = None,
        check_seconds: float | None = None,
        clock: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        queue_size: int = 10_000,
    ) -> None:
        self._feed = feed
        self._quotes = quotes
        self._silence = silence_seconds
        self._poll_seconds = poll_seconds
        self._expect_ticks = expect_ticks
        self._on_switch = on_switch
        self._check = check_seconds or min(1.0, silence_seconds / 4)
        self._clock = clock
        self._mono = monotonic
        self._codes: list[str] = []
        self._out = DropOldestStream(queue_size)
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._last_feed_tick = monotonic()
        self._expected_since: float | None = None
        self._polling: PollingPriceFeed | None = None
        self._polling_since = 0.0
        self.switches: list[FeedSwitch] = []

    @property
    def mode(self) -> FeedMode:
        return FeedMode.POLLING if self._polling is not None else FeedMode.FEED

    async def subscribe(self, codes: Iterable[str]) -> None:
        new = [c for c in dict.fromkeys(normalise_code(c) for c in codes) if c not in self._codes]
        self._codes += new
        if not self._started:
            self._started = True
            self._last_feed_tick = self._mono()
            self._spawn(self._pump_feed(), "price-feed-pump")
            self._spawn(self._watchdog(), "price-feed-watchdog")
        await self._feed.subscribe(new)  # 1
        if new:
            self._spawn(self._snapshot(new), "price-snapshot")
        if new and self._polling is not None:
            await self._polling.subscribe(new)

    async def unsubscribe(self, codes: Iterable[str]) -> None:
        gone = {normalise_code(c) for c in codes}
        self._codes = [c for c in self._codes if c not in gone]
        await self._feed.unsubscribe(gone)
        if self._polling is not None:
            await self._polling.unsubscribe(gone)

    def ticks(self) -> AsyncIterator[PriceTick]:
        return self._out.items()

    @property
    def gaps(self) -> int:
        """The feed's gaps, every switch (the silence before polling began; the quotes' sampling while it
        lasted) and every tick dropped here."""
        return self._feed.gaps + len(self.switches) + self._out.dropped

    async def aclose(self) -> None:  # 6
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._polling is not None:
            await self._polling.aclose()
            self._polling = None
        await self._feed.aclose()
        self._out.close()

    # -----------------------------------------------------------------------------------------------------

    def _spawn(self, work: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _snapshot(self, codes: list[str]) -> None:
        for code in codes:
            try:
                quote = await self._quotes.quote(code)
            except BrokerError as exc:
                log.warning("snapshot quote for %s failed: %s", code, exc)
                continue
            if code in self._codes:
                self._out.put(PriceTick(code, quote.price, self._clock().astimezone(KST), 0))

    async def _pump_feed(self) -> None:  # 2, 5
        async for tick in self._feed.ticks():
            self._last_feed_tick = self._mono()
            if self._polling is not None:
                await self._stop_polling()
            self._out.put(tick)

    async def _watchdog(self) -> None:  # 3, 4
        while True:
            await asyncio.sleep(self._check)
            now = self._mono()
            if not self._expect_ticks():
                self._expected_since = None
                continue
            if self._expected_since is None:
                self._expected_since = now
            silent = now - max(self._last_feed_tick, self._expected_since)
            if self._polling is None and self._codes and silent > self._silence:
                await self._start_polling(silent)

    async def _start_polling(self, silent: float) -> None:
        polling = PollingPriceFeed(self._quotes, interval=self._poll_seconds, clock=self._clock)
        self._polling, self._polling_since = polling, self._mono()
        await polling.subscribe(self._codes)
        self._spawn(self._pump_polling(polling), "price-polling-pump")
        log.warning(
            "price feed silent for %.1f s during the session: polling quotes for %d codes",
            silent, len(self._codes),
        )  # fmt: skip
        self._switched(FeedSwitch(FeedMode.POLLING, round(silent, 1), len(self._codes)))

    async def _pump_polling(self, polling: PollingPriceFeed) -> None:
        async for tick in polling.ticks():
            if self._polling is polling:
                self._out.put(tick)

    async def _stop_polling(self) -> None:
        polling, self._polling = self._polling, None
        if polling is None:
            return
        await polling.aclose()
        lasted = self._mono() - self._polling_since
        log.warning("price feed ticking again after %.1f s of polling: polling stopped", lasted)
        self._switched(FeedSwitch(FeedMode.FEED, round(lasted, 1), len(self._codes)))

    def _switched(self, switch: FeedSwitch) -> None:
        self.switches.append(switch)
        if self._on_switch is not None:
            try:
                self._on_switch(switch)
            except Exception:  # an alert that fails must not stop the prices
                log.exception("price source switch listener failed")
