"""The web app's side of the API: the static export of ``web/`` served at ``/`` (with a
Content-Security-Policy that allows exactly the export's own inline scripts, by hash) and the dashboard's
live feed.

The live feed (``GET /api/web/stream``, Server-Sent Events) costs the broker nothing per viewer: one
:class:`LiveHub` per app polls the database ONCE per interval for every user someone is watching, and pushes
each user's snapshot (positions with their tiers, the latest trading day's orders, trades) to all of that
user's open streams when it changed. Current prices come from the API's price lookup (cached per code), asked
at most once per ``price_seconds`` per watched user, never per browser.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import mimetypes
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import jwt
import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from autotrade.api.app import CurrentOperator, CurrentUser  # app.py includes this module only in create_app
from autotrade.domain.krx import KST
from autotrade.store.db import Database
from autotrade.store.models import (
    EquitySnapshot,
    OrderIntentRow,
    ThreeTierStrategy,
    TradeRecordRow,
    UserApiKey,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from autotrade.api.app import ApiDeps

log = logging.getLogger(__name__)

WEB_OUT = Path(__file__).resolve().parents[2] / "web" / "out"
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\ssrc=)[^>]*>(.*?)</script>", re.DOTALL)  # without src=
_API_PREFIXES = ("/api/", "/docs", "/redoc", "/openapi.json", "/health", "/metrics", "/ready")


def web_dir() -> Path:
    return Path(os.environ.get("AUTOTRADE_WEB_DIR", str(WEB_OUT)))


def content_security_policy(html: bytes) -> str:
    """Scripts only from this origin plus the page's own inline scripts by hash (no 'unsafe-inline');
    connections only to this origin (the API and the live feed); no framing, plugins or foreign forms."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() + "'"
        for m in _INLINE_SCRIPT.finditer(html)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


class StaticWeb:
    """ASGI middleware: a GET/HEAD for a file of the export is answered from it; every other request (the
    API, the docs, anything not in the export) goes on to the app, so routes added to the app in any order
    keep working."""

    def __init__(self, app: ASGIApp, root: Path) -> None:
        self.app = app
        self.root = root.resolve()
        self._cache: dict[Path, tuple[bytes, dict[str, str]]] = {}

    def _find(self, path: str) -> Path | None:
        if path.startswith(_API_PREFIXES) or "\x00" in path:
            return None
        rel = path.lstrip("/")
        for candidate in (rel, f"{rel}/index.html" if rel else "index.html", f"{rel}.html"):
            p = (self.root / candidate).resolve()
            if p.is_relative_to(self.root) and p.is_file():
                return p
        return None

    def _load(self, p: Path) -> tuple[bytes, dict[str, str]]:
        stat = p.stat()
        cached = self._cache.get(p)
        if cached is not None and cached[1].get("x-mtime") == str(stat.st_mtime_ns):
            return cached
        body = p.read_bytes()
        ctype = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
            ctype += "; charset=utf-8"
        headers = {
            "content-type": ctype,
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "x-mtime": str(stat.st_mtime_ns),
        }
        if p.suffix == ".html":
            headers["content-security-policy"] = content_security_policy(body)
            headers["cache-control"] = "no-cache"
        elif "/_next/static/" in p.as_posix():
            headers["cache-control"] = "public, max-age=31536000, immutable"
        self._cache[p] = (body, headers)
        return body, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        path = str(scope["path"])
        found = self._find(path)
        status = 200
        if found is None and not path.startswith(_API_PREFIXES) and "." not in path.rsplit("/", 1)[-1]:
            # An unknown page: the export's 404 page (the API's own 404s stay JSON).
            not_found = self.root / "404.html"
            if path != "/" and not_found.is_file():
                found, status = not_found, 404
        if found is None:
            await self.app(scope, receive, send)
            return
        body, headers = self._load(found)
        raw = [(k.encode(), v.encode()) for k, v in headers.items() if k != "x-mtime"]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


# ---------------------------------------------------------------------------------------------- live feed


def snapshots(db: Database, users: list[str]) -> dict[str, dict[str, Any]]:
    """Every watched user's dashboard data in a few queries for all of them together (no current prices)."""
    out: dict[str, dict[str, Any]] = {
        u: {"positions": [], "orders": [], "trades": [], "realized_pnl": 0, "equity": []} for u in users
    }
    if not users:
        return out
    with db.unit_of_work() as s:
        strategies = s.scalars(
            sa.select(ThreeTierStrategy)
            .where(ThreeTierStrategy.user_id.in_(users), ThreeTierStrategy.closed_at.is_(None))
            .order_by(ThreeTierStrategy.id)
        ).all()
        for st in strategies:
            out[st.user_id]["positions"].append(
                {
                    "id": st.id, "account_no": st.account_no, "code": st.code, "name": st.name,
                    "entry_price": st.entry_price, "quantity": st.quantity, "held_quantity": st.held_quantity,
                    "status": st.status.value,
                    "tiers": [
                        {"type": o.order_type.value, "price": o.trigger_price, "status": o.status.value,
                         "quantity": o.quantity}
                        for o in st.orders
                    ],
                }
            )  # fmt: skip
        latest: dict[str, Any] = {
            u: d
            for u, d in s.execute(
                sa.select(OrderIntentRow.user_id, sa.func.max(OrderIntentRow.trading_day))
                .where(OrderIntentRow.user_id.in_(users))
                .group_by(OrderIntentRow.user_id)
            ).all()
        }
        if latest:
            day_match = sa.or_(
                *(
                    sa.and_(OrderIntentRow.user_id == u, OrderIntentRow.trading_day == d)
                    for u, d in latest.items()
                )
            )
            for o in s.scalars(sa.select(OrderIntentRow).where(day_match).order_by(OrderIntentRow.id)):
                out[o.user_id]["orders"].append(
                    {
                        "id": o.id, "code": o.code, "side": o.side.value, "purpose": o.purpose,
                        "quantity": o.quantity, "price": o.price, "status": o.status.value,
                        "filled_quantity": o.filled_quantity,
                        "at": (o.submitted_at or o.created_at).isoformat(),
                    }
                )  # fmt: skip
        for u in users:
            trades = s.scalars(
                sa.select(TradeRecordRow)
                .where(TradeRecordRow.user_id == u)
                .order_by(TradeRecordRow.executed_at.desc(), TradeRecordRow.id.desc())
                .limit(50)
            ).all()
            out[u]["trades"] = [
                {
                    "id": t.id, "code": t.code, "name": t.name, "action": t.action.value,
                    "quantity": t.quantity,
                    "price": t.price, "amount": t.amount, "profit_loss": t.profit_loss,
                    "exit_reason": t.exit_reason.value if t.exit_reason else None,
                    "executed_at": t.executed_at.isoformat(),
                }
                for t in trades
            ]  # fmt: skip
        for u, total in s.execute(
            sa.select(TradeRecordRow.user_id, sa.func.coalesce(sa.func.sum(TradeRecordRow.profit_loss), 0))
            .where(TradeRecordRow.user_id.in_(users))
            .group_by(TradeRecordRow.user_id)
        ).all():
            out[u]["realized_pnl"] = int(total)
        days: dict[str, dict[Any, int]] = {u: {} for u in users}
        for u, day, equity in s.execute(
            sa.select(EquitySnapshot.user_id, EquitySnapshot.trading_day, sa.func.sum(EquitySnapshot.equity))
            .where(EquitySnapshot.user_id.in_(users))
            .group_by(EquitySnapshot.user_id, EquitySnapshot.trading_day)
        ).all():
            days[u][day] = int(equity)
    for u, by_day in days.items():
        peak = 0
        for day in sorted(by_day)[-250:]:  # about a year of trading days
            peak = max(peak, by_day[day])
            drawdown = round((by_day[day] - peak) / peak * 100, 2) if peak else 0.0
            out[u]["equity"].append({"day": day.isoformat(), "equity": by_day[day], "drawdown": drawdown})
    return out


SNAPSHOT_EXAMPLE = {
    "at": "2026-11-19T09:31:02+09:00", "version": "3f2a9c0d1e2b4a5c", "realized_pnl": 36400,
    "positions": [
        {"id": 1, "account_no": "12345678901", "code": "005930", "name": "삼성전자", "entry_price": 70000,
         "current_price": 72800, "profit_rate": 4.0, "quantity": 10, "held_quantity": 5,
         "status": "PRESERVE_TRIGGERED",
         "tiers": [{"type": "STOP_LOSS", "price": 66500, "status": "ACTIVE", "quantity": 5},
                   {"type": "PRESERVE", "price": 72800, "status": "EXECUTED", "quantity": 5},
                   {"type": "TAKE_PROFIT", "price": 75600, "status": "ACTIVE", "quantity": 5}]}],
    "unrealized_pnl": 14000, "orders": [], "trades": [],
    "equity": [{"day": "2026-11-18", "equity": 30000000, "drawdown": 0.0},
               {"day": "2026-11-19", "equity": 29850000, "drawdown": -0.5}],
}  # fmt: skip


def day_at_a_glance(db: Database, day: date | None) -> dict[str, Any]:
    """The operator's day (``day``, default the latest day with orders): orders sent and filled by side, exits
    fired by tier, open positions watched, and the keys that are not ACTIVE with when they changed."""
    with db.unit_of_work() as s:
        if day is None:
            day = s.scalar(sa.select(sa.func.max(OrderIntentRow.trading_day)))
        orders: dict[str, dict[str, int]] = {}
        if day is not None:
            for side, status, n, filled in s.execute(
                sa.select(
                    OrderIntentRow.side, OrderIntentRow.status, sa.func.count(OrderIntentRow.id),
                    sa.func.coalesce(sa.func.sum(OrderIntentRow.filled_quantity), 0),
                )
                .where(OrderIntentRow.trading_day == day)
                .group_by(OrderIntentRow.side, OrderIntentRow.status)
            ).all():  # fmt: skip
                row = orders.setdefault(side.value, {"sent": 0, "filled": 0, "rejected": 0, "shares": 0})
                row["sent"] += int(n)
                row["shares"] += int(filled)
                if status.value == "FILLED":
                    row["filled"] += int(n)
                elif status.value == "REJECTED":
                    row["rejected"] += int(n)
        exits = {
            reason.value: int(n)
            for reason, n in s.execute(
                sa.select(TradeRecordRow.exit_reason, sa.func.count(TradeRecordRow.id))
                .where(TradeRecordRow.trading_day == day, TradeRecordRow.exit_reason.is_not(None))
                .group_by(TradeRecordRow.exit_reason)
            ).all()
        }
        watched = s.scalar(
            sa.select(sa.func.count(ThreeTierStrategy.id)).where(ThreeTierStrategy.closed_at.is_(None))
        )
        keys = [
            {"user_id": k.user_id, "account_no": k.account_no, "api_status": k.api_status.value,
             "changed_at": k.status_changed_at.isoformat() if k.status_changed_at else None}
            for k in s.scalars(
                sa.select(UserApiKey).where(UserApiKey.api_status != "ACTIVE").order_by(UserApiKey.id)
            )
        ]  # fmt: skip
    return {
        "trading_day": day.isoformat() if day else None,
        "orders": orders,
        "exits": exits,
        "open_positions": int(watched or 0),
        "keys_not_active": keys,
    }


DAY_EXAMPLE = {
    "trading_day": "2026-11-19", "open_positions": 9,
    "orders": {"BUY": {"sent": 12, "filled": 12, "rejected": 0, "shares": 640},
               "SELL": {"sent": 3, "filled": 3, "rejected": 0, "shares": 10}},
    "exits": {"PRESERVE": 2, "TAKE_PROFIT": 1},
    "keys_not_active": [{"user_id": "3f2a9c", "account_no": "12345678901", "api_status": "DISABLED",
                         "changed_at": "2026-11-19T10:02:11+09:00"}],
}  # fmt: skip

PriceLookup = Callable[[str, list[str]], Awaitable[dict[str, int]]]


@dataclass(eq=False)
class _Viewer:
    user_id: str
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(maxsize=4))


class LiveHub:
    """One poller for all viewers. ``polls`` and ``price_asks`` count the database polls and price lookups
    (tests read them to show the cost does not grow with the number of browsers)."""

    def __init__(
        self, db: Database, prices: PriceLookup, *, interval: float = 0.5, price_seconds: float = 5.0
    ) -> None:
        self.db = db
        self.prices = prices
        self.interval = interval
        self.price_seconds = price_seconds
        self.viewers: set[_Viewer] = set()
        self.polls = 0
        self.price_asks = 0
        self._last: dict[str, str] = {}  # user -> the last snapshot sent (without its time)
        self._prices: dict[str, tuple[float, dict[str, int]]] = {}
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, user_id: str) -> _Viewer:
        v = _Viewer(user_id)
        self.viewers.add(v)
        last = self._last.get(user_id)
        if last is not None:
            v.queue.put_nowait(self._stamp(last))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="web-live-hub")
        return v

    def unsubscribe(self, v: _Viewer) -> None:
        self.viewers.discard(v)
        if not any(x.user_id == v.user_id for x in self.viewers):
            self._last.pop(v.user_id, None)
            self._prices.pop(v.user_id, None)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @staticmethod
    def _stamp(body: str) -> str:
        data = json.loads(body)
        data["at"] = datetime.now(KST).isoformat()
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    async def _current_prices(self, user_id: str, codes: list[str], now: float) -> dict[str, int]:
        cached = self._prices.get(user_id)
        if cached is not None and now - cached[0] < self.price_seconds and set(codes) <= set(cached[1]):
            return cached[1]
        self.price_asks += 1
        try:
            got = await self.prices(user_id, codes) if codes else {}
        except Exception as exc:  # the dashboard shows no current price rather than fail
            log.warning("live feed: prices unavailable: %s", type(exc).__name__)
            got = {}
        self._prices[user_id] = (now, got)
        return got

    async def current(self, user_id: str) -> dict[str, Any]:
        """One user's snapshot now (for a client that does not take the stream)."""
        snap = (await asyncio.to_thread(snapshots, self.db, [user_id]))[user_id]
        await self._add_prices(user_id, snap, asyncio.get_running_loop().time())
        snap["at"] = datetime.now(KST).isoformat()
        return snap

    async def _add_prices(self, user_id: str, snap: dict[str, Any], now: float) -> None:
        codes = sorted({p["code"] for p in snap["positions"]})
        px = await self._current_prices(user_id, codes, now)
        unrealized = 0
        for p in snap["positions"]:
            cur = px.get(p["code"])
            p["current_price"] = cur
            entry = p["entry_price"]
            p["profit_rate"] = round((cur - entry) / entry * 100, 2) if cur else None
            unrealized += (cur - entry) * p["held_quantity"] if cur else 0
        snap["unrealized_pnl"] = unrealized  # before costs; positions without a price count 0

    async def poll_once(self) -> None:
        users = sorted({v.user_id for v in self.viewers})
        if not users:
            return
        self.polls += 1
        data = await asyncio.to_thread(snapshots, self.db, users)
        now = asyncio.get_running_loop().time()
        for user_id in users:
            snap = data[user_id]
            await self._add_prices(user_id, snap, now)
            body = json.dumps(snap, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
            snap["version"] = hashlib.sha256(body.encode()).hexdigest()[:16]
            body = json.dumps(snap, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
            if self._last.get(user_id) == body:
                continue
            self._last[user_id] = body
            message = self._stamp(body)
            for v in [x for x in self.viewers if x.user_id == user_id]:
                if v.queue.full():  # a slow browser gets the newest snapshot, not a backlog
                    with contextlib.suppress(asyncio.QueueEmpty):
                        v.queue.get_nowait()
                v.queue.put_nowait(message)

    async def _run(self) -> None:
        while self.viewers:
            try:
                await self.poll_once()
            except Exception:
                log.exception("live feed poll failed")
            await asyncio.sleep(self.interval)


MAX_STREAMS_PER_USER = 8  # browser tabs of one user; more is a client gone wrong


def _token_expiry(request: Request) -> float:
    """When the (already verified) bearer token of the request expires, as a Unix time: a stream lives no
    longer than the session it was opened with."""
    token = request.headers.get("authorization", "").partition(" ")[2]
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        return float(claims["exp"])
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        return 0.0


def include_web(app: FastAPI, deps: ApiDeps) -> None:
    """Add the live feed to the API and serve the web app's export at ``/`` (when it has been built)."""
    hub = LiveHub(deps.db, deps.prices, interval=float(os.environ.get("AUTOTRADE_WEB_POLL_SECONDS", "0.5")))
    app.state.live_hub = hub
    router = APIRouter(tags=["web"])

    @router.get(
        "/api/web/stream",
        response_model=None,
        responses={
            200: {
                "content": {
                    "application/json": {"example": SNAPSHOT_EXAMPLE},
                    "text/event-stream": {"example": "event: snapshot\ndata: {...}\n\n"},
                },
                "description": "your dashboard snapshot: once as JSON, or as a stream of `snapshot` events "
                "when the request accepts text/event-stream",
            }
        },
    )
    async def stream(me: CurrentUser, request: Request) -> Response:
        """Your positions (entry, current price, profit rate, each tier's price, status and quantity), the
        latest trading day's orders and your trades. With ``Accept: text/event-stream``: Server-Sent Events,
        a ``snapshot`` event at once and whenever it changes, a comment every 15 s keeping the line open;
        otherwise the snapshot once as JSON."""
        if "text/event-stream" not in request.headers.get("accept", ""):
            return JSONResponse(await hub.current(me.user_id))
        if sum(v.user_id == me.user_id for v in hub.viewers) >= MAX_STREAMS_PER_USER:
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "too many open streams")
        ends = _token_expiry(request)
        viewer = hub.subscribe(me.user_id)

        async def events() -> AsyncIterator[str]:
            try:
                yield "retry: 1000\n\n"
                while not await request.is_disconnected():
                    left = ends - time.time()
                    if left <= 0:  # the session ended: the browser reconnects, is refused and logs out
                        yield "event: expired\ndata: {}\n\n"
                        return
                    try:
                        msg = await asyncio.wait_for(viewer.queue.get(), min(15.0, left))
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield f"event: snapshot\ndata: {msg}\n\n"
            finally:
                hub.unsubscribe(viewer)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @router.get(
        "/api/web/ops/day",
        responses={200: {"content": {"application/json": {"example": DAY_EXAMPLE}}}},
    )
    async def ops_day(
        _: CurrentOperator, day: Annotated[date | None, Query(description="KRX trading day")] = None
    ) -> dict[str, Any]:
        """Operator: the day at a glance (default: the latest day with orders): orders sent, filled and
        rejected by side with the shares filled, exits fired by tier, open positions watched, and every key
        that is not ACTIVE (disabled by the kill switch, deleted) with when it changed."""
        return await asyncio.to_thread(day_at_a_glance, deps.db, day)

    app.include_router(router)
    root = web_dir()
    if (root / "index.html").is_file():
        app.add_middleware(StaticWeb, root=root)
    else:
        log.info("web app not built (%s missing): run `make install`", root / "index.html")
