"""Real-time prices: Kiwoom's WebSocket feed (type ``0B``), or polling ka10001 where a socket cannot be used.

The WebSocket protocol (OFF ws_client.py, KIWOOM.md section 7): connect, send ``LOGIN`` with the token and
wait for its ack, echo every app-level ``PING`` back unchanged (the server drops clients that do not),
``REG`` codes with ``refresh: "1"`` so registrations add up, and read ``REAL`` pushes. The feed owns the
connection: on any disconnect it reconnects with backoff, logs in again (with a new token if the old one was
refused) and re-registers everything subscribed, so a caller iterating :meth:`PriceFeed.ticks` only sees a
gap, never an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from autotrade.broker.errors import TOKEN_EXPIRED_CODES, BrokerError, Envelope, scrub
from autotrade.broker.messages import (
    KST,
    Side,
    normalise_code,
    parse_hhmmss,
    parse_price,
    parse_signed_int,
    side_from_text,
)
from autotrade.broker.tokens import TokenProvider, utc_now

log = logging.getLogger(__name__)


class _RedactLogin(logging.Filter):
    """websockets logs every frame at DEBUG, and the LOGIN frame carries the bearer token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOGIN" in record.getMessage() and "token" in record.getMessage():
            record.msg, record.args = "> TEXT LOGIN frame (token redacted)", ()
        return True


# The socket's own logger: websockets' frame logs go here instead of "websockets.client", through the filter.
ws_log = logging.getLogger(f"{__name__}.websocket")
ws_log.addFilter(_RedactLogin())

Clock = Callable[[], datetime]

TRADE_TYPE = "0B"  # 주식체결
ORDER_EXECUTION_TYPE = "00"  # 주문체결
MAX_ITEMS_PER_REG = 100  # reported cap per REG (UNCONFIRMED); larger subscriptions are split


@dataclass(frozen=True, slots=True)
class PriceTick:
    """A trade. ``volume`` is the shares in this trade (WebSocket) or since the previous poll (polling)."""

    code: str
    price: int
    at: datetime
    volume: int


@dataclass(frozen=True, slots=True)
class OrderExecution:
    """A type ``00`` push: an order was accepted, filled (partly), modified, cancelled or rejected."""

    order_no: str
    code: str
    status: str  # 913: 접수 / 체결 / 확인 … (text UNCONFIRMED)
    side: Side | None
    order_quantity: int
    order_price: int
    unfilled_quantity: int
    orig_order_no: str
    fill_no: str
    fill_price: int
    fill_quantity: int
    at: datetime
    reject_reason: str = ""


class PriceFeed(Protocol):
    """Prices for a changing set of codes, as an async stream of ticks."""

    async def subscribe(self, codes: Iterable[str]) -> None: ...

    async def unsubscribe(self, codes: Iterable[str]) -> None: ...

    def ticks(self) -> AsyncIterator[PriceTick]: ...

    @property
    def gaps(self) -> int:
        """How many times trades may have gone by unseen so far (a reconnect, ticks dropped by a reader that
        fell behind, a switch to or from polling). It only grows: a reader that sees it change catches up
        on what it may have missed (the day's range from a quote)."""
        ...

    async def aclose(self) -> None: ...


class FeedLoginError(Exception):
    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


def _at(hhmmss: object, clock: Clock) -> datetime:
    """An HHMMSS wall time on today's KST date; the clock's time when the field is missing."""
    now = clock().astimezone(KST)
    parsed = parse_hhmmss(hhmmss) if hhmmss is not None else None
    if parsed is None:
        return now
    return datetime.combine(now.date(), parsed, KST)


def parse_trade(item: str, values: Mapping[str, Any], clock: Clock) -> PriceTick | None:
    """A ``0B`` push: FID 10 price (signed direction), 20 time HHMMSS, 15 volume (+ buy / - sell)."""
    if "10" not in values:
        return None
    return PriceTick(
        code=normalise_code(item),
        price=parse_price(values["10"]),
        at=_at(values.get("20"), clock),
        volume=abs(parse_signed_int(values.get("15", "0"))),
    )


def parse_order_execution(values: Mapping[str, Any], clock: Clock) -> OrderExecution:
    """A ``00`` push (FIDs from OFF fid.py, KIWOOM.md section 7)."""

    def text(fid: str) -> str:
        return str(values.get(fid, "")).strip()

    return OrderExecution(
        order_no=text("9203"),
        code=normalise_code(text("9001")),
        status=text("913"),
        side=_execution_side(text("907"), text("905")),
        order_quantity=parse_price(text("900")),
        order_price=parse_price(text("901")),
        unfilled_quantity=parse_price(text("902")),
        orig_order_no=text("904"),
        fill_no=text("909"),
        fill_price=parse_price(text("910")),
        fill_quantity=parse_price(text("911")),
        at=_at(values.get("908"), clock),
        reject_reason=text("919"),
    )


def _execution_side(code: str, kind: str) -> Side | None:
    # 907: 1 sell, 2 buy; 905 text ("+매수", "-매도") when 907 is missing.
    if code == "1":
        return Side.SELL
    if code == "2":
        return Side.BUY
    return side_from_text(kind)


class DropOldestStream:
    """A bounded queue read as an async iterator. When the reader falls behind, the oldest item goes:
    a price watcher wants the latest price, not a backlog."""

    def __init__(self, size: int) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue(size)
        self._dropped = 0

    @property
    def dropped(self) -> int:
        return self._dropped

    def put(self, item: Any) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self._dropped += 1
            if self._dropped in (1, 100, 10_000):
                log.warning("feed reader is behind; %d items dropped so far", self._dropped)
        self._queue.put_nowait(item)

    def close(self) -> None:
        self.put(_CLOSED)

    async def items(self) -> AsyncIterator[Any]:
        while True:
            item = await self._queue.get()
            if item is _CLOSED:
                self._queue.put_nowait(_CLOSED)  # wake every other reader too
                return
            yield item


_CLOSED = object()


class WebSocketPriceFeed:
    """Kiwoom's real-time feed over one WebSocket for one app key."""

    def __init__(
        self,
        url: str,
        tokens: TokenProvider,
        *,
        clock: Clock = utc_now,
        group: str = "1",
        order_executions: bool = False,
        reconnect_base_delay: float = 0.5,
        reconnect_max_delay: float = 30.0,
        open_timeout: float = 10.0,
        queue_size: int = 10_000,
    ) -> None:
        self.url = url
        self._tokens = tokens
        self._clock = clock
        self._group = group
        self._order_executions = order_executions
        self._base_delay = reconnect_base_delay
        self._max_delay = reconnect_max_delay
        self._open_timeout = open_timeout
        self._codes: set[str] = set()
        self._ticks = DropOldestStream(queue_size)
        self._executions = DropOldestStream(queue_size)
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.connections = 0  # successful logins, for monitoring and tests

    def __repr__(self) -> str:
        return f"WebSocketPriceFeed({self.url!r}, codes={len(self._codes)})"

    async def __aenter__(self) -> WebSocketPriceFeed:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kiwoom-ws-feed")

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def subscribe(self, codes: Iterable[str]) -> None:
        new = {normalise_code(c) for c in codes} - self._codes
        self._codes |= new
        self.start()
        if new and self._ws is not None:
            await self._register(self._ws, sorted(new))

    async def unsubscribe(self, codes: Iterable[str]) -> None:
        gone = {normalise_code(c) for c in codes} & self._codes
        self._codes -= gone
        if gone and self._ws is not None:
            await self._send_items(self._ws, "REMOVE", sorted(gone), TRADE_TYPE)

    def ticks(self) -> AsyncIterator[PriceTick]:
        return self._ticks.items()

    @property
    def gaps(self) -> int:
        """Every login after the first (the socket was down in between) and every tick dropped."""
        return max(0, self.connections - 1) + self._ticks.dropped

    def order_executions(self) -> AsyncIterator[OrderExecution]:
        return self._executions.items()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._ticks.close()
        self._executions.close()

    # -----------------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                async with connect(
                    self.url, ping_interval=None, open_timeout=self._open_timeout, logger=ws_log
                ) as ws:
                    await self._login(ws)
                    failures = 0
                    await self._on_connected(ws)
                    await self._pump(ws)
            except (
                ConnectionClosed,
                InvalidHandshake,
                OSError,
                TimeoutError,
                FeedLoginError,
                BrokerError,
            ) as exc:
                log.warning("price feed disconnected (%s: %s); reconnecting", type(exc).__name__, exc)
            except Exception:
                # A position must never go unwatched: whatever broke, reconnect rather than die.
                log.exception("price feed failed unexpectedly; reconnecting")
            finally:
                self._ws = None
                self._connected.clear()
            failures += 1
            await asyncio.sleep(self._delay(failures))

    async def _on_connected(self, ws: ClientConnection) -> None:
        self._ws = ws
        self.connections += 1
        if self._codes:
            await self._register(ws, sorted(self._codes))
        if self._order_executions:
            await self._send_items(ws, "REG", [""], ORDER_EXECUTION_TYPE)
        self._connected.set()
        log.info("price feed connected; %d codes registered", len(self._codes))

    async def _login(self, ws: ClientConnection) -> None:
        token = await self._tokens.token()
        await ws.send(json.dumps({"trnm": "LOGIN", "token": token}))
        async with asyncio.timeout(self._open_timeout):
            await self._await_login_ack(ws, token)

    async def _await_login_ack(self, ws: ClientConnection, token: str) -> None:
        while True:
            message = _decode(await ws.recv())
            if message.get("trnm") == "PING":
                await ws.send(json.dumps(message, ensure_ascii=False))
                continue
            if message.get("trnm") != "LOGIN":
                continue
            envelope = Envelope(int(message.get("return_code", 0)), str(message.get("return_msg", "")))
            if envelope.return_code == 0:
                return
            if envelope.code in TOKEN_EXPIRED_CODES:
                await self._tokens.invalidate(token)
            raise FeedLoginError(f"LOGIN refused: {scrub(envelope.return_msg, (token,))}", envelope.code)

    async def _pump(self, ws: ClientConnection) -> None:
        async for raw in ws:
            message = _decode(raw)
            trnm = message.get("trnm")
            if trnm == "PING":
                # Echo the frame exactly as received: Kiwoom compares it.
                await ws.send(raw)
            elif trnm == "REAL":
                self._dispatch(message.get("data") or [])
            elif trnm in ("REG", "REMOVE") and str(message.get("return_code", "0")) != "0":
                log.warning("price feed %s refused: %s", trnm, message.get("return_msg", ""))

    def _dispatch(self, items: list[Any]) -> None:
        for item in items:
            if not isinstance(item, dict):
                continue
            values = item.get("values") or {}
            kind = item.get("type")
            if kind == TRADE_TYPE:
                tick = parse_trade(str(item.get("item", "")), values, self._clock)
                if tick is not None:
                    self._ticks.put(tick)
            elif kind == ORDER_EXECUTION_TYPE:
                self._executions.put(parse_order_execution(values, self._clock))

    async def _register(self, ws: ClientConnection, codes: list[str]) -> None:
        for start in range(0, len(codes), MAX_ITEMS_PER_REG):
            await self._send_items(ws, "REG", codes[start : start + MAX_ITEMS_PER_REG], TRADE_TYPE)

    async def _send_items(self, ws: ClientConnection, trnm: str, items: list[str], kind: str) -> None:
        message: dict[str, Any] = {"trnm": trnm, "grp_no": self._group}
        if trnm == "REG":
            message["refresh"] = "1"  # add to what this group already has
        message["data"] = [{"item": items, "type": [kind]}]
        with contextlib.suppress(ConnectionClosed):  # the reconnect re-registers everything
            await ws.send(json.dumps(message))

    def _delay(self, failures: int) -> float:
        ceiling = min(self._max_delay, self._base_delay * 2.0 ** (failures - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter


def _decode(raw: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


class QuoteSource(Protocol):
    async def quote(self, code: str) -> Any: ...


class PollingPriceFeed:
    """Prices by polling ka10001. Each key allows about one quote per second, so this suits a handful of
    codes (a fallback, or the simulator); the WebSocket feed is the one that scales."""

    def __init__(
        self, session: QuoteSource, *, interval: float = 1.0, clock: Clock = utc_now, queue_size: int = 10_000
    ) -> None:
        self._session = session
        self._interval = interval
        self._clock = clock
        self._codes: list[str] = []
        self._volumes: dict[str, int] = {}
        self._ticks = DropOldestStream(queue_size)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PollingPriceFeed:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def subscribe(self, codes: Iterable[str]) -> None:
        for code in codes:
            code = normalise_code(code)
            if code not in self._codes:
                self._codes.append(code)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kiwoom-poll-feed")

    async def unsubscribe(self, codes: Iterable[str]) -> None:
        gone = {normalise_code(c) for c in codes}
        self._codes = [c for c in self._codes if c not in gone]
        for code in gone:
            self._volumes.pop(code, None)

    def ticks(self) -> AsyncIterator[PriceTick]:
        return self._ticks.items()

    @property
    def gaps(self) -> int:
        """Ticks dropped (what trades between two quotes is unknowable to a poller anyway)."""
        return self._ticks.dropped

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._ticks.close()

    async def _run(self) -> None:
        while True:
            for code in list(self._codes):
                try:
                    quote = await self._session.quote(code)
                except BrokerError as exc:
                    log.warning("quote for %s failed: %s", code, exc)
                    continue
                self._emit(code, quote.price, quote.volume)
            await asyncio.sleep(self._interval)

    def _emit(self, code: str, price: int, cumulative_volume: int) -> None:
        if code not in self._codes:
            return  # unsubscribed while the quote was in flight
        previous = self._volumes.get(code)
        self._volumes[code] = cumulative_volume
        volume = 0 if previous is None else max(0, cumulative_volume - previous)
        self._ticks.put(PriceTick(code=code, price=price, at=self._clock().astimezone(KST), volume=volume))
