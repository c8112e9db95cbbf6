"""WebSocket feed against the fake server (LOGIN, PING echo, REG, REAL, reconnect) and the polling feed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime

import pytest

from autotrade.broker.feed import OrderExecution, PollingPriceFeed, PriceTick, WebSocketPriceFeed
from autotrade.broker.messages import KST, Side
from autotrade.broker.session import KiwoomSession
from autotrade.broker.tokens import TokenManager
from tests.broker.fake_kiwoom import FakeKiwoom


async def eventually(check: Callable[[], bool], within: float = 3.0) -> None:
    """Wait for a condition on the fake's recorded state (it has no events to wait on)."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polling test state is the point
            await asyncio.sleep(0.01)


async def next_item(stream: AsyncIterator[object], within: float = 3.0) -> object:
    async with asyncio.timeout(within):
        return await anext(stream)


# The feed's clock: one second after midnight in Seoul (00:00:01 KST on the 25th is 15:00:01 UTC on the
# 24th). A tick's HHMMSS takes the date of this clock in KST (the 25th), not the UTC date, and not the
# machine's date.
FEED_NOW = datetime(2026, 11, 24, 15, 0, 1, tzinfo=UTC)


@pytest.fixture
async def feed(base_url: str, tokens: TokenManager) -> AsyncIterator[WebSocketPriceFeed]:
    ws_url = base_url.replace("http://", "ws://") + "/api/dostk/websocket"
    async with WebSocketPriceFeed(
        ws_url, tokens, reconnect_base_delay=0.02, order_executions=True, clock=lambda: FEED_NOW
    ) as f:
        yield f


def registered(fake: FakeKiwoom) -> set[str]:
    return set().union(*fake.sockets.values()) if fake.sockets else set()


async def test_login_register_and_ticks(feed: WebSocketPriceFeed, fake: FakeKiwoom) -> None:
    await feed.subscribe(["005930", "A000660"])
    await feed.wait_connected()
    await eventually(lambda: {"005930", "000660"} <= registered(fake))
    assert fake.ws_logins == [fake.issued[0]]
    reg = fake.reg_messages[0]
    assert reg["trnm"] == "REG" and reg["grp_no"] == "1" and reg["refresh"] == "1"
    assert reg["data"] == [{"item": ["000660", "005930"], "type": ["0B"]}]

    ticks = feed.ticks()
    await fake.push_trade("005930", {"20": "093015", "10": "-70100", "11": "-900", "15": "-120", "13": "99"})
    tick = await next_item(ticks)
    assert isinstance(tick, PriceTick)
    assert (tick.code, tick.price, tick.volume) == ("005930", 70100, 120)
    assert (tick.at.hour, tick.at.minute, tick.at.second, tick.at.utcoffset()) == (
        9,
        30,
        15,
        KST.utcoffset(None),
    )
    assert tick.at.date() == date(2026, 11, 25)


async def test_ping_is_echoed_unchanged(feed: WebSocketPriceFeed, fake: FakeKiwoom) -> None:
    await feed.subscribe(["005930"])
    await eventually(lambda: len(fake.ping_echoes) >= 3)
    assert fake.ping_echoes[:3] == fake.pings_sent[:3]


async def test_reconnects_and_resubscribes(feed: WebSocketPriceFeed, fake: FakeKiwoom) -> None:
    await feed.subscribe(["005930", "035720"])
    await eventually(lambda: {"005930", "035720"} <= registered(fake))
    assert feed.gaps == 0  # the first login is no gap
    await fake.drop_sockets()
    await eventually(lambda: feed.connections == 2 and {"005930", "035720"} <= registered(fake))
    assert feed.gaps == 1  # trades while it was down went by unseen: a reader catches up on them
    ticks = feed.ticks()
    assert await fake.push_trade("035720", {"20": "100000", "10": "43050", "15": "+3"}) == 1
    tick = await next_item(ticks)
    assert isinstance(tick, PriceTick) and (tick.code, tick.price) == ("035720", 43050)


async def test_login_with_refused_token_gets_a_new_one(
    feed: WebSocketPriceFeed, fake: FakeKiwoom, tokens: TokenManager
) -> None:
    await tokens.token()
    fake.expire_tokens()
    await feed.subscribe(["005930"])
    await feed.wait_connected()
    assert len(fake.issued) == 2
    assert fake.ws_logins == [fake.issued[0], fake.issued[1]]


async def test_unsubscribe_sends_remove(feed: WebSocketPriceFeed, fake: FakeKiwoom) -> None:
    await feed.subscribe(["005930", "000660"])
    await eventually(lambda: {"005930", "000660"} <= registered(fake))
    await feed.unsubscribe(["000660"])
    await eventually(lambda: registered(fake) == {"005930", ""})
    remove = fake.reg_messages[-1]
    assert remove == {"trnm": "REMOVE", "grp_no": "1", "data": [{"item": ["000660"], "type": ["0B"]}]}
    assert await fake.push_trade("000660", {"10": "1"}) == 0


async def test_order_execution_push(feed: WebSocketPriceFeed, fake: FakeKiwoom) -> None:
    await feed.wait_connected()
    await eventually(lambda: "" in registered(fake))
    events = feed.order_executions()
    await fake.push_order_execution(
        {
            "9201": "1234567890",
            "9203": "0000101",
            "9001": "A005930",
            "913": "체결",
            "302": "삼성전자",
            "900": "10",
            "901": "70000",
            "902": "4",
            "904": "0000000",
            "905": "+매수",
            "907": "2",
            "908": "093001",
            "909": "55",
            "910": "+70000",
            "911": "6",
        }
    )
    event = await next_item(events)
    assert isinstance(event, OrderExecution)
    assert (
        event.order_no,
        event.code,
        event.side,
        event.fill_price,
        event.fill_quantity,
        event.unfilled_quantity,
    ) == ("0000101", "005930", Side.BUY, 70000, 6, 4)
    assert (event.at.hour, event.at.minute, event.at.second) == (9, 30, 1)


async def test_close_ends_iteration(feed: WebSocketPriceFeed) -> None:
    ticks = feed.ticks()
    await feed.aclose()
    with pytest.raises(StopAsyncIteration):
        await next_item(ticks)


async def test_polling_feed(session: KiwoomSession, fake: FakeKiwoom) -> None:
    async with PollingPriceFeed(session, interval=0.01) as feed:
        ticks = feed.ticks()
        await feed.subscribe(["005930"])
        first = await next_item(ticks)
        assert isinstance(first, PriceTick) and (first.price, first.volume) == (70100, 0)
        fake.quotes["005930"] = {**fake.quotes["005930"], "cur_prc": "+70200", "trde_qty": "12345700"}
        tick: object = first
        while isinstance(tick, PriceTick) and tick.price != 70200:
            tick = await next_item(ticks)
        assert isinstance(tick, PriceTick) and tick.volume == 22 and tick.at.tzinfo is not None


async def test_polling_feed_survives_errors(session: KiwoomSession, fake: FakeKiwoom) -> None:
    async with PollingPriceFeed(session, interval=0.01) as feed:
        ticks = feed.ticks()
        await feed.subscribe(["999999", "000660"])  # unknown code fails each round; the other still flows
        tick = await next_item(ticks)
        assert isinstance(tick, PriceTick) and tick.code == "000660"


async def test_ticks_dropped_by_a_reader_that_fell_behind_are_a_gap(
    base_url: str, fake: FakeKiwoom, tokens: TokenManager
) -> None:
    ws_url = base_url.replace("http://", "ws://") + "/api/dostk/websocket"
    feed = WebSocketPriceFeed(ws_url, tokens, queue_size=2, clock=lambda: FEED_NOW)
    try:
        await feed.subscribe(["005930"])
        await feed.wait_connected()
        await eventually(lambda: "005930" in registered(fake))
        for second in range(5):  # nobody reads: three of five go
            await fake.push_trade("005930", {"20": f"10000{second}", "10": str(70_000 + second), "15": "+1"})
        await eventually(lambda: feed.gaps == 3)
        tick = await next_item(feed.ticks())
        assert isinstance(tick, PriceTick) and tick.price == 70_003  # the latest two are kept
    finally:
        await feed.aclose()
