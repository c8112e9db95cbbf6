"""The operator's price source against the simulator over real HTTP and WebSocket: a silent feed and a feed
that keeps dropping (the simulator's ``ws_disconnect`` fault) fall back to polling quotes with the operator's
key, and back to the feed when its ticks resume; silence outside the session is not an alarm; the feed and
the quotes use the operator's market-data key, never a user's, and a real broker without one is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, time
from pathlib import Path
from typing import Any

import pytest

from autotrade.access import SIMULATOR_OPERATOR_ACCOUNT, GatewayAccess, MarketDataKeyMissing
from autotrade.access import simulator_market_data_key as provision
from autotrade.broker.client import KiwoomClient
from autotrade.broker.fallback import FallbackPriceFeed, FeedMode, FeedSwitch
from autotrade.broker.feed import PriceTick, WebSocketPriceFeed
from autotrade.broker.messages import Credentials, Quote
from autotrade.broker.session import KiwoomSession
from autotrade.broker.tokens import TokenManager
from autotrade.config import BrokerEnv, Settings
from autotrade.domain.krx import KST
from autotrade.sim.server import RunningSimulator, running_simulator
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade

CODE = "005930"
OPEN_DAY = datetime(2026, 11, 18, 10, 0, tzinfo=KST)  # a Wednesday, mid-session


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    with running_simulator(seed=3, start=OPEN_DAY, ping_seconds=0.2) as s:
        s.admin.add_stocks([{"code": CODE, "name": "삼성전자", "prev_close": 70_000}])
        yield s


class CountedQuotes:
    """The real session, counting the quotes it was asked for (to see the polling stop)."""

    def __init__(self, session: KiwoomSession) -> None:
        self.session = session
        self.calls = 0

    async def quote(self, code: str) -> Quote:
        self.calls += 1
        return await self.session.quote(code)


@pytest.fixture
async def parts(sim: RunningSimulator) -> AsyncIterator[tuple[WebSocketPriceFeed, CountedQuotes]]:
    creds = provision(sim.base_url)

    async def load() -> Credentials:
        return creds

    async with KiwoomClient(sim.base_url, rate_per_second=100, burst=100, retry_base_delay=0.01) as client:
        tokens = TokenManager(client, "market-data", load, clock=sim.engine.now)
        feed = WebSocketPriceFeed(
            sim.ws_url, tokens, clock=sim.engine.now, reconnect_base_delay=0.02, reconnect_max_delay=0.1
        )
        yield feed, CountedQuotes(KiwoomSession(client, "market-data", tokens))


def fallback(
    parts: tuple[WebSocketPriceFeed, CountedQuotes],
    switches: list[FeedSwitch],
    expect_ticks: Callable[[], bool] = lambda: True,
) -> FallbackPriceFeed:
    feed, quotes = parts
    return FallbackPriceFeed(
        feed, quotes, silence_seconds=0.5, poll_seconds=0.05, expect_ticks=expect_ticks,
        on_switch=switches.append, check_seconds=0.05,
    )  # fmt: skip


async def tick_where(ticks: AsyncIterator[PriceTick], check: Callable[[PriceTick], bool]) -> PriceTick:
    async with asyncio.timeout(10):
        async for tick in ticks:
            if check(tick):
                return tick
    raise AssertionError("the stream ended")


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - waiting on the source's state is the point
            await asyncio.sleep(0.02)


async def test_silent_feed_polls_then_returns_to_the_feed(
    sim: RunningSimulator, parts: tuple[WebSocketPriceFeed, CountedQuotes]
) -> None:
    """The simulator's clock stands still: the socket is up (PINGs every 0.2 s) but no trade prints. After
    0.5 s of silence the quotes are polled; the first trade on the socket ends the polling."""
    feed, quotes = parts
    switches: list[FeedSwitch] = []
    source = fallback(parts, switches)
    try:
        ticks = source.ticks()
        await source.subscribe([CODE])
        first = await tick_where(ticks, lambda t: True)
        # The snapshot quote: before any trade, and before the silence could start the polling.
        assert (first.code, first.price) == (CODE, 70_000) and switches == [] and quotes.calls == 1
        await feed.wait_connected()
        assert source.gaps == 0
        await until(lambda: source.mode is FeedMode.POLLING)
        assert [s.mode for s in switches] == [FeedMode.POLLING] and switches[0].seconds >= 0.5
        assert source.gaps == 1  # the silence before polling began
        polled = quotes.calls
        await tick_where(ticks, lambda t: t.price == 70_000)
        await until(lambda: quotes.calls >= polled + 3)  # polling every 0.05 s

        sim.admin.set_price(CODE, 69_000)  # a trade: pushed on the socket
        await until(lambda: source.mode is FeedMode.FEED)
        assert [s.mode for s in switches] == [FeedMode.POLLING, FeedMode.FEED]
        assert source.gaps == 2  # and what trades between two quotes, while it lasted
        stopped = quotes.calls
        await asyncio.sleep(0.3)
        assert quotes.calls == stopped, "polling went on after the feed came back"
    finally:
        await source.aclose()


async def test_dropping_feed_polls_and_a_crossing_is_seen_by_polling(
    sim: RunningSimulator, parts: tuple[WebSocketPriceFeed, CountedQuotes]
) -> None:
    """Every message the client sends ends the socket (``ws_disconnect``), so no registration holds: the
    price moved meanwhile reaches the watcher through polling; once the fault is gone the feed returns."""
    sim.admin.add_fault("ws_disconnect", path="/api/dostk/websocket")
    switches: list[FeedSwitch] = []
    source = fallback(parts, switches)
    try:
        ticks = source.ticks()
        await source.subscribe([CODE])
        await until(lambda: source.mode is FeedMode.POLLING)
        sim.admin.set_price(CODE, 66_000)
        seen = await tick_where(ticks, lambda t: t.price == 66_000)
        assert seen.code == CODE and sim.admin.faults()["counts"]["ws_disconnect"] >= 1

        sim.admin.clear_faults()
        price = 66_000
        while source.mode is FeedMode.POLLING:  # trades until one arrives on the re-registered socket
            price += 100
            sim.admin.set_price(CODE, price)
            await asyncio.sleep(0.1)
        assert [s.mode for s in switches] == [FeedMode.POLLING, FeedMode.FEED]
    finally:
        await source.aclose()


async def test_silence_outside_the_session_is_no_alarm(
    parts: tuple[WebSocketPriceFeed, CountedQuotes],
) -> None:
    feed, quotes = parts
    switches: list[FeedSwitch] = []
    source = fallback(parts, switches, expect_ticks=lambda: False)
    try:
        await source.subscribe([CODE])
        await feed.wait_connected()
        await asyncio.sleep(1.5)  # three times the allowed silence
        assert switches == [] and source.mode is FeedMode.FEED
        assert quotes.calls == 1  # the snapshot only
    finally:
        await source.aclose()


def _access(sim: RunningSimulator, tmp_path: Path, **settings: Any) -> GatewayAccess:
    url = f"sqlite:///{tmp_path / 'feed.db'}"
    upgrade(url)
    cfg = Settings(
        database_url=url, data_dir=tmp_path, broker_base_url=sim.base_url,
        local_master_key_path=tmp_path / "master.key", **settings,
    )  # fmt: skip
    return GatewayAccess(cfg, Database(url), clock=sim.engine.now)


async def test_the_feed_logs_in_with_the_operator_key(sim: RunningSimulator, tmp_path: Path) -> None:
    """No user is registered at all: the feed does not need one. The socket the watcher opened belongs to
    the operator's account at the simulator, and a configured key is the one used."""
    creds = provision(sim.base_url)
    access = _access(
        sim, tmp_path, market_data_app_key=creds.app_key, market_data_app_secret=creds.app_secret
    )
    prices = await access.price_feed()
    try:
        await prices.subscribe([CODE])
        first = await prices.next_tick(wait_seconds=5)
        assert first is not None and first[:2] == (CODE, 70_000)
        await until(lambda: bool(sim.simulator._sockets))
        assert {s.account_no for s in sim.simulator._sockets} == {SIMULATOR_OPERATOR_ACCOUNT}
        used = {t.appkey for t in sim.engine.tokens.values()}
        assert used == {creds.app_key.get_secret_value()}
    finally:
        await prices.aclose()
        await access.aclose()


async def test_no_market_data_key_on_a_real_broker_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'feed.db'}"
    cfg = Settings(
        database_url=url, data_dir=tmp_path, broker_env=BrokerEnv.MOCK,
        local_master_key_path=tmp_path / "master.key",
    )  # fmt: skip
    access = GatewayAccess(cfg, Database(url))
    with pytest.raises(MarketDataKeyMissing, match="AUTOTRADE_MARKET_DATA_APP_KEY"):
        await access.price_feed()
    await access.aclose()


def test_session_hours_decide_when_silence_counts(sim: RunningSimulator, tmp_path: Path) -> None:
    """Trades print 09:00-15:20 on trading days (the closing auction prints none)."""
    access = _access(sim, tmp_path)
    for moment, expected in [
        (datetime(2026, 11, 18, 8, 59, tzinfo=KST), False),
        (datetime(2026, 11, 18, 9, 0, tzinfo=KST), True),
        (datetime(2026, 11, 18, 15, 19, tzinfo=KST), True),
        (datetime(2026, 11, 18, 15, 20, tzinfo=KST), False),
        (datetime.combine(datetime(2026, 11, 21).date(), time(11, 0), KST), False),  # a Saturday
    ]:
        access.clock = lambda moment=moment: moment  # type: ignore[misc]
        assert access._trading_expected() is expected, moment
