"""The simulator's ASGI app: Kiwoom's REST paths, headers, field names, codes and envelopes, the real-time
WebSocket feed, and an admin API under ``/_sim/`` (not a Kiwoom path) for accounts, prices, the clock and
faults. See ``PROTOCOL.md`` for the assumptions made where the notes are unconfirmed."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from autotrade.domain.krx import KST, price_limits
from autotrade.sim.faults import FaultKind, FaultPlan, FaultRule
from autotrade.sim.market import (
    TRADE_TYPE_TEXT,
    Account,
    MarketEngine,
    Order,
    OrderStatus,
    SimError,
    Stock,
)

OK_MSG = "정상적으로 처리되었습니다"
JSON_CT = "application/json;charset=UTF-8"
ROUTES: dict[str, frozenset[str]] = {
    "/api/dostk/ordr": frozenset({"kt10000", "kt10001", "kt10002", "kt10003"}),
    "/api/dostk/acnt": frozenset({"ka00001", "kt00001", "kt00004", "kt00018", "ka10075", "ka10076"}),
    "/api/dostk/stkinfo": frozenset({"ka10001"}),
    "/api/dostk/mrkcond": frozenset({"ka10004"}),
}


def signed(price: int, base: int) -> str:
    """Kiwoom's price format: a sign for the direction against the previous close, none when flat."""
    if price > base:
        return f"+{price}"
    if price < base:
        return f"-{price}"
    return str(price)


# The real server's headline before the bracket where it differs from the detail (KIWOOM.md: an invalid
# token answers HTTP 200, return_code 3, "인증에 실패했습니다[8005:Token이 유효하지 않습니다]").
HEADLINES = {8005: "인증에 실패했습니다"}


def envelope_error(exc: SimError) -> dict[str, Any]:
    return {"return_code": exc.category, "return_msg": f"{HEADLINES.get(exc.code, exc)}[{exc.code}:{exc}]"}


class _Bucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Simulator:
    def __init__(
        self,
        engine: MarketEngine,
        *,
        page_size: int = 20,
        rate_limit: tuple[float, int] | None = None,
        ping_seconds: float = 10.0,
        fault_seed: int = 0,
        admin_token: str | None = None,
    ) -> None:
        self.engine = engine
        self.page_size = page_size
        self.rate_limit = rate_limit
        # the per-key limit's answer: HTTP 200 with return_code 5 (as observed) or HTTP 429 with it
        self.rate_limit_http_status = 200
        # when set, the admin API needs it in X-Sim-Admin-Token
        self.admin_token = admin_token
        self.ping_seconds = ping_seconds
        self.faults = FaultPlan(seed=fault_seed)
        self.faults.reset(fault_seed)
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._sockets: set[_Socket] = set()
        engine.price_listeners.append(self._on_price)
        engine.order_listeners.append(self._on_order)

    @property
    def feed_registrations(self) -> list[frozenset[str]]:
        """The codes registered on each open WebSocket (for tests that wait for a feed to be up or down)."""
        return [frozenset(sock.codes) for sock in list(self._sockets)]

    # --- REST ---

    async def token(self, request: Request) -> Response:
        body = await _json(request)
        if body.get("grant_type") != "client_credentials":
            return _ok_json(envelope_error(SimError("grant_type이 유효하지 않습니다", 8011, 3)), "au10001")
        fault, _ = await self._faults(request, "au10001")
        if fault is not None:
            return fault
        try:
            token = self.engine.issue_token(str(body.get("appkey", "")), str(body.get("secretkey", "")))
        except SimError as exc:
            return _ok_json(envelope_error(exc), "au10001")
        return _ok_json(
            {
                "expires_dt": token.expires_at.astimezone(KST).strftime("%Y%m%d%H%M%S"),
                "token_type": "bearer",
                "token": token.value,
                "return_code": 0,
                "return_msg": OK_MSG,
            },
            "au10001",
        )

    async def revoke(self, request: Request) -> Response:
        body = await _json(request)
        try:
            self.engine.revoke_token(
                str(body.get("appkey", "")), str(body.get("secretkey", "")), str(body.get("token", ""))
            )
        except SimError as exc:
            return _ok_json(envelope_error(exc), "au10002")
        return _ok_json({"return_code": 0, "return_msg": OK_MSG}, "au10002")

    async def dostk(self, request: Request) -> Response:
        path = request.url.path
        api_id = request.headers.get("api-id", "")
        if not api_id:
            return _ok_json(envelope_error(SimError("api-id가 없습니다", 1501, 2)), api_id)
        if api_id not in ROUTES.get(path, frozenset()):
            return _ok_json(
                envelope_error(SimError("해당 URI에서는 지원하지 않는 API ID입니다", 1504, 2)), api_id
            )
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or len(auth) < 8:
            return _ok_json(envelope_error(SimError("authorization 헤더가 없습니다", 1514, 2)), api_id)
        token = auth[7:].strip()
        # The request arrives whole before any delay: a client that gives up while it waits does not stop
        # the broker from processing it (that is what makes a timed-out order's outcome unknown).
        body = await _json(request)
        fault, drop = await self._faults(request, api_id, token)
        if fault is not None:
            return fault
        try:
            account = self.engine.account_for_token(token)
        except SimError as exc:
            return _ok_json(envelope_error(exc), api_id)
        appkey = self.engine.tokens[token].appkey
        if not self._allow(appkey, api_id):
            text = "허용된 요청 개수를 초과하였습니다"
            limited = {"return_code": 5, "return_msg": f"{text}[1700:{text}. API ID={api_id}]"}
            if self.rate_limit_http_status == 429:
                return JSONResponse(limited, status_code=429, headers={"api-id": api_id}, media_type=JSON_CT)
            return _ok_json(limited, api_id)
        try:
            result = self._handle(api_id, account, body)
        except SimError as exc:
            return _ok_json(envelope_error(exc), api_id)
        except (KeyError, ValueError, TypeError) as exc:
            return _ok_json(
                envelope_error(SimError(f"입력값 형식 오류 ({type(exc).__name__})", 1517, 2)), api_id
            )
        if drop:  # processed, but the answer is lost on the way back
            return Response(status_code=504)
        if isinstance(result, tuple):
            list_key, rows, extra = result
            return self._page(request, api_id, list_key, rows, extra)
        return _ok_json({**result, "return_code": 0, "return_msg": OK_MSG}, api_id)

    async def _faults(
        self, request: Request, api_id: str, token: str | None = None
    ) -> tuple[Response | None, bool]:
        """(an error answer to send instead, whether to drop the answer after processing)."""
        drop = False
        for rule in self.faults.draw(request.url.path, api_id):
            if rule.kind is FaultKind.LATENCY:
                await asyncio.sleep(rule.latency_ms / 1000)
            elif rule.kind is FaultKind.HTTP_500:
                return JSONResponse(
                    {"return_code": 1999, "return_msg": "예기치 못한 오류[1999:서버 오류]"}, status_code=500
                ), drop
            elif rule.kind is FaultKind.HTTP_429:
                text = "허용된 요청 개수를 초과하였습니다"
                msg = f"{text}[1700:{text}. API ID={api_id}]"
                return JSONResponse({"return_code": 5, "return_msg": msg}, status_code=429), drop
            elif rule.kind is FaultKind.TOKEN_EXPIRY and token is not None:
                self.engine.expire_token(token)
            elif rule.kind is FaultKind.DROP_AFTER_ACCEPT:
                drop = True
        return None, drop

    def _allow(self, appkey: str, api_id: str) -> bool:
        if self.rate_limit is None:
            return True
        bucket = self._buckets.setdefault((appkey, api_id), _Bucket(*self.rate_limit))
        return bucket.take()

    def _page(
        self, request: Request, api_id: str, list_key: str, rows: list[dict[str, Any]], extra: dict[str, Any]
    ) -> Response:
        start = 0
        if request.headers.get("cont-yn", "N") == "Y":
            with contextlib.suppress(ValueError):
                start = int(request.headers.get("next-key", "0") or 0)
        page = rows[start : start + self.page_size]
        more = start + self.page_size < len(rows)
        body = {**extra, list_key: page, "return_code": 0, "return_msg": OK_MSG}
        headers = {
            "api-id": api_id,
            "cont-yn": "Y" if more else "N",
            "next-key": str(start + self.page_size) if more else "",
        }
        return JSONResponse(body, headers=headers, media_type=JSON_CT)

    def _handle(self, api_id: str, account: Account, body: dict[str, Any]) -> Any:
        e = self.engine
        if api_id in ("kt10000", "kt10001"):
            price = str(body.get("ord_uv") or "").strip()
            order = e.place(
                account,
                "BUY" if api_id == "kt10000" else "SELL",
                _code(body["stk_cd"]),
                int(body["ord_qty"]),
                int(price) if price else None,
                str(body["trde_tp"]),
                _optional_int(body.get("cond_uv")),
            )
            return {"ord_no": order.order_no, "dmst_stex_tp": body.get("dmst_stex_tp", "KRX")}
        if api_id == "kt10003":
            rec = e.cancel(
                account, str(body["orig_ord_no"]), _code(body["stk_cd"]), int(body.get("cncl_qty") or 0)
            )
            return {
                "ord_no": rec.order_no,
                "base_orig_ord_no": rec.orig_order_no,
                "cncl_qty": str(rec.quantity),
            }
        if api_id == "kt10002":
            new = e.modify(
                account, str(body["orig_ord_no"]), _code(body["stk_cd"]), int(body.get("mdfy_qty") or 0),
                int(body["mdfy_uv"]), _optional_int(body.get("mdfy_cond_uv")),
            )  # fmt: skip
            return {
                "ord_no": new.order_no,
                "base_orig_ord_no": new.orig_order_no,
                "mdfy_qty": str(new.quantity),
                "dmst_stex_tp": body.get("dmst_stex_tp", "KRX"),
            }
        if api_id == "kt00001":
            orderable = e.orderable_cash(account)
            return {
                "entr": str(account.cash),
                "ord_alow_amt": str(orderable),
                "pymn_alow_amt": str(orderable),
                "d1_entra": str(account.cash),
                "d2_entra": str(account.cash),
                "100stk_ord_alow_amt": str(orderable),
            }
        if api_id == "ka00001":  # 계좌번호조회: the account the token's app key serves
            return {"acctNo": account.account_no}
        if api_id == "kt00004":  # 계좌평가현황: the holdings' answer with the account's name
            list_key, rows, totals = self._holdings(account)
            return list_key, rows, {**totals, "acnt_nm": account.name}
        if api_id == "kt00018":
            return self._holdings(account)
        if api_id == "ka10075":
            return "oso", [self._oso(o) for o in e.orders_of(account) if o.remaining > 0], {}
        if api_id == "ka10076":
            code = _code(body["stk_cd"]) if body.get("stk_cd") else None
            rows = [self._cntr(o) for o in e.orders_of(account) if _shows_in_cntr(o)]
            return "cntr", [r for r in rows if code is None or r["stk_cd"] == code], {}
        if api_id == "ka10001":
            return self._quote(e._stock(_code(body["stk_cd"])))
        raise SimError("지원하지 않는 API ID입니다", 1505, 2)

    def _holdings(self, account: Account) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
        rows, tot_pur, tot_eval = [], 0, 0
        for code, pos in sorted(self.engine.accounts[account.account_no].holdings.items()):
            s = self.engine.stocks[code]
            evl = pos.quantity * s.price
            pl = evl - pos.cost
            tot_pur += pos.cost
            tot_eval += evl
            rows.append(
                {
                    "stk_cd": f"A{code}",
                    "stk_nm": s.name,
                    "rmnd_qty": str(pos.quantity),
                    "trde_able_qty": str(self.engine.sellable(account, code)),
                    "pur_pric": str(pos.avg_price),
                    "cur_prc": signed(s.price, s.prev_close),
                    "evlt_amt": str(evl),
                    "evltv_prft": str(pl),
                    "prft_rt": f"{pl / pos.cost * 100:.2f}" if pos.cost else "0.00",
                    "pur_amt": str(pos.cost),
                }
            )
        totals = {
            "tot_pur_amt": str(tot_pur),
            "tot_evlt_amt": str(tot_eval),
            "tot_evlt_pl": str(tot_eval - tot_pur),
            "tot_prft_rt": f"{(tot_eval - tot_pur) / tot_pur * 100:.2f}" if tot_pur else "0.00",
            "prsm_dpst_aset_amt": str(account.cash + tot_eval),
        }
        return "acnt_evlt_remn_indv_tot", rows, totals

    def _oso(self, o: Order) -> dict[str, Any]:
        s = self.engine.stocks[o.code]
        return {
            "ord_no": o.order_no,
            "stk_cd": o.code,
            "stk_nm": s.name,
            "ord_stt": "접수" if not o.fills else "체결",
            "ord_qty": str(o.quantity),
            "ord_pric": str(o.price or 0),
            "oso_qty": str(o.remaining),
            "cntr_tot_amt": str(o.filled_amount),
            "orig_ord_no": o.orig_order_no,
            "io_tp_nm": "+매수" if o.side == "BUY" else "-매도",
            "trde_tp": TRADE_TYPE_TEXT.get(o.trade_type, ""),
            "tm": o.placed_at.astimezone(KST).strftime("%H%M%S"),
            "cntr_pric": str(o.fills[-1].price if o.fills else 0),
            "cntr_qty": str(o.fills[-1].quantity if o.fills else 0),
            "cur_prc": signed(s.price, s.prev_close),
            "stex_tp": "1",
            "sor_yn": "N",
            "stop_pric": str(o.stop_price or 0),
        }

    def _cntr(self, o: Order) -> dict[str, Any]:
        s = self.engine.stocks[o.code]
        status = {OrderStatus.CANCELLED: "취소", OrderStatus.EXPIRED: "만료"}.get(o.status, "체결")
        return {
            "ord_no": o.order_no,
            "stk_cd": o.code,
            "stk_nm": s.name,
            "io_tp_nm": "+매수" if o.side == "BUY" else "-매도",
            "ord_pric": str(o.price or 0),
            "ord_qty": str(o.quantity),
            "cntr_pric": str(o.avg_fill_price),
            "cntr_qty": str(o.filled_quantity),
            "oso_qty": str(o.remaining),
            "tdy_trde_cmsn": str(sum(f.fee for f in o.fills)),
            "tdy_trde_tax": str(sum(f.tax for f in o.fills)),
            "ord_stt": status,
            "trde_tp": TRADE_TYPE_TEXT.get(o.trade_type, ""),
            "orig_ord_no": o.orig_order_no,
            "ord_tm": o.placed_at.astimezone(KST).strftime("%H%M%S"),
            "stex_tp": "1",
            "sor_yn": "N",
            "stop_pric": str(o.stop_price or 0),
        }

    def _quote(self, s: Stock) -> dict[str, Any]:
        lower, upper = price_limits(s.prev_close)
        change = s.price - s.prev_close
        return {
            "stk_cd": s.code,
            "stk_nm": s.name,
            "cur_prc": signed(s.price, s.prev_close),
            "pred_pre": f"{change:+d}" if change else "0",
            "flu_rt": f"{change / s.prev_close * 100:+.2f}",
            "trde_qty": str(s.volume),
            "open_pric": signed(s.open or s.price, s.prev_close),
            "high_pric": signed(s.high or s.price, s.prev_close),
            "low_pric": signed(s.low or s.price, s.prev_close),
            "base_pric": str(s.prev_close),
            "upl_pric": signed(upper, s.prev_close),
            "lst_pric": signed(lower, s.prev_close),
        }

    # --- WebSocket ---

    async def websocket(self, ws: WebSocket) -> None:
        await ws.accept()
        sock = _Socket(ws)
        try:
            login = json.loads(await ws.receive_text())
            if login.get("trnm") != "LOGIN":
                await ws.close(code=1008)
                return
            try:
                account = self.engine.account_for_token(str(login.get("token", "")))
            except SimError as exc:
                await ws.send_text(json.dumps({"trnm": "LOGIN", **envelope_error(exc)}, ensure_ascii=False))
                await ws.close()
                return
            sock.account_no = account.account_no
            await ws.send_text(json.dumps({"trnm": "LOGIN", "return_code": 0, "return_msg": ""}))
            self._sockets.add(sock)
            sender = asyncio.create_task(sock.pump(self.ping_seconds))
            try:
                while True:
                    msg = json.loads(await ws.receive_text())
                    if self._ws_fault():
                        break
                    trnm = msg.get("trnm")
                    if trnm in ("REG", "REMOVE"):
                        for item in msg.get("data", []):
                            for code in item.get("item", []):
                                (sock.codes.add if trnm == "REG" else sock.codes.discard)(_code(code))
                        await ws.send_text(json.dumps({"trnm": trnm, "return_code": 0, "return_msg": ""}))
            finally:
                sender.cancel()
        except (WebSocketDisconnect, RuntimeError, json.JSONDecodeError):
            pass
        finally:
            self._sockets.discard(sock)
            with contextlib.suppress(RuntimeError):
                await ws.close()

    def _ws_fault(self) -> bool:
        return any(r.kind is FaultKind.WS_DISCONNECT for r in self.faults.draw("/api/dostk/websocket", None))

    def _on_price(self, s: Stock, price: int, at: datetime) -> None:
        if not self._sockets:
            return
        change = price - s.prev_close
        values = {
            "20": at.astimezone(KST).strftime("%H%M%S"),
            "10": signed(price, s.prev_close),
            "11": f"{change:+d}" if change else "0",
            "12": f"{change / s.prev_close * 100:+.2f}",
            "13": str(s.volume),
            "15": "+10",
            "16": signed(s.open or price, s.prev_close),
            "17": signed(s.high or price, s.prev_close),
            "18": signed(s.low or price, s.prev_close),
        }
        frame = {
            "trnm": "REAL",
            "data": [{"type": "0B", "name": "주식체결", "item": s.code, "values": values}],
        }
        text = json.dumps(frame, ensure_ascii=False)
        for sock in list(self._sockets):
            if s.code in sock.codes:
                sock.queue.put_nowait(text)

    def _on_order(self, o: Order, fill: Any) -> None:
        for sock in list(self._sockets):
            if sock.account_no == o.account_no and fill is not None:
                values = {
                    "9201": o.account_no,
                    "9203": o.order_no,
                    "9001": o.code,
                    "913": "체결",
                    "900": str(o.quantity),
                    "902": str(o.remaining),
                    "907": "2" if o.side == "BUY" else "1",
                    "910": str(fill.price),
                    "911": str(fill.quantity),
                    "909": str(fill.fill_no),
                }
                frame = {
                    "trnm": "REAL",
                    "data": [{"type": "00", "name": "주문체결", "item": "", "values": values}],
                }
                sock.queue.put_nowait(json.dumps(frame, ensure_ascii=False))

    # --- admin ---

    async def admin(self, request: Request) -> Response:
        e = self.engine
        path = request.url.path.removeprefix("/_sim/")
        if self.admin_token is not None and not hmac.compare_digest(
            request.headers.get("x-sim-admin-token", "").encode(), self.admin_token.encode()
        ):
            return JSONResponse({"error": "admin token required (X-Sim-Admin-Token)"}, status_code=401)
        # Only JSON changes state: a web page can send a cross-origin text/plain or form POST without a
        # preflight, never an application/json one.
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.method == "POST" and content_type != "application/json":
            return JSONResponse({"error": "send application/json"}, status_code=415)
        body = await _json(request) if request.method in ("POST", "PUT") else {}
        try:
            if path == "accounts" and request.method == "POST":
                a = e.add_account(
                    str(body["account_no"]), str(body.get("name", "")), int(body.get("cash", 0))
                )
                return JSONResponse({"account_no": a.account_no, "cash": a.cash})
            if path.startswith("accounts/") and request.method == "GET":
                return JSONResponse(self._account_state(path.split("/", 1)[1]))
            if path == "appkeys":
                k = e.add_appkey(str(body["account_no"]), body.get("appkey"), body.get("secretkey"))
                return JSONResponse(
                    {"appkey": k.appkey, "secretkey": k.secretkey, "account_no": k.account_no}
                )
            if path == "stocks" and request.method == "POST":
                for item in body.get("stocks", [body]):
                    e.add_stock(
                        str(item["code"]),
                        str(item.get("name", item["code"])),
                        int(item["prev_close"]),
                        float(item.get("drift", 0.0)),
                    )
                return JSONResponse({"stocks": len(e.stocks)})
            if path == "stocks":
                return JSONResponse(
                    {
                        c: {"name": s.name, "price": s.price, "prev_close": s.prev_close}
                        for c, s in e.stocks.items()
                    }
                )
            if path == "prices":
                e.set_price(str(body["code"]), int(body["price"]))
                return JSONResponse({"code": body["code"], "price": e.stocks[str(body["code"])].price})
            if path == "clock" and request.method == "POST":
                if "speed" in body:
                    stop = body.get("stop_at")
                    e.set_speed(float(body["speed"]), datetime.fromisoformat(str(stop)) if stop else None)
                if body.get("set"):
                    e.set_time(datetime.fromisoformat(str(body["set"])))
                if body.get("advance_seconds"):
                    e.advance(float(body["advance_seconds"]))
                return JSONResponse(self._clock())
            if path == "clock":
                return JSONResponse(self._clock())
            if path == "run":
                e.set_time(datetime.fromisoformat(str(body["until"])))
                return JSONResponse(self._clock())
            if path == "faults" and request.method == "POST":
                rule = FaultRule(
                    kind=FaultKind(body["kind"]),
                    path=str(body.get("path", "*")),
                    api_id=body.get("api_id"),
                    probability=float(body.get("probability", 1.0)),
                    count=None if body.get("count") is None else int(body["count"]),
                    latency_ms=int(body.get("latency_ms", 0)),
                )
                self.faults.add(rule, body.get("seed"))
                return JSONResponse({"rules": len(self.faults.rules)})
            if path == "websockets/drop" and request.method == "POST":
                socks = list(self._sockets)
                for sock in socks:
                    with contextlib.suppress(RuntimeError):
                        await sock.ws.close(code=1012)  # service restart: the client reconnects
                return JSONResponse({"dropped": len(socks)})
            if path == "faults" and request.method == "DELETE":
                self.faults.reset()
                return JSONResponse({"rules": 0})
            if path == "faults":
                return JSONResponse(
                    {
                        "counts": dict(self.faults.counts),
                        "rules": [
                            {"kind": r.kind.value, "path": r.path, "api_id": r.api_id, "fired": r.fired}
                            for r in self.faults.rules
                        ],
                    }
                )
            if path == "rate_limit" and request.method == "POST":
                if "rate" in body:
                    self.rate_limit = (float(body["rate"]), int(body.get("burst", 1)))
                    self._buckets.clear()
                status_code = int(body.get("http_status", self.rate_limit_http_status))
                if status_code not in (200, 429):
                    raise ValueError("http_status is 200 or 429")
                self.rate_limit_http_status = status_code
                return JSONResponse({"rate_limit": self.rate_limit, "http_status": status_code})
            if path == "tokens/expire":
                for t in list(e.tokens.values()):
                    if body.get("appkey") in (None, t.appkey):
                        e.expire_token(t.value)
                return JSONResponse({"expired": True})
        except (KeyError, ValueError, TypeError, SimError) as exc:
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=400)
        return JSONResponse({"error": "not found"}, status_code=404)

    def _clock(self) -> dict[str, Any]:
        return {"now": self.engine.now().isoformat(), "speed": self.engine.speed}

    def _account_state(self, account_no: str) -> dict[str, Any]:
        e = self.engine
        a = e.accounts[account_no]
        return {
            "account_no": a.account_no,
            "cash": a.cash,
            "orderable": e.orderable_cash(a),
            "holdings": {
                c: {"quantity": p.quantity, "avg_price": p.avg_price, "cost": p.cost}
                for c, p in a.holdings.items()
            },
            "orders": [
                {
                    "order_no": o.order_no,
                    "code": o.code,
                    "side": o.side,
                    "quantity": o.quantity,
                    "price": o.price,
                    "trade_type": o.trade_type,
                    "status": o.status.value,
                    "filled": o.filled_quantity,
                    "filled_amount": o.filled_amount,
                    "fee": sum(f.fee for f in o.fills),
                    "tax": sum(f.tax for f in o.fills),
                    "orig_order_no": o.orig_order_no,
                    "day": o.trading_day.isoformat(),
                }
                for o in e.orders.values()
                if o.account_no == account_no
            ],
        }


class _Socket:
    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.codes: set[str] = set()
        self.account_no: str | None = None
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    async def pump(self, ping_seconds: float) -> None:
        while True:
            try:
                text = await asyncio.wait_for(self.queue.get(), ping_seconds)
            except TimeoutError:
                text = json.dumps({"trnm": "PING"})
            try:
                await self.ws.send_text(text)
            except (WebSocketDisconnect, RuntimeError):
                return  # the client went away; the receive side ends the connection


def _shows_in_cntr(o: Order) -> bool:
    """ka10076 lists orders with fills, and orders that ended (cancelled or expired) with none."""
    if o.is_record:
        return False
    return bool(o.fills) or o.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED)


def _optional_int(raw: Any) -> int | None:
    text = str(raw or "").strip()
    return int(text) if text else None


def _code(raw: Any) -> str:
    code = str(raw).strip()
    code = code[1:] if code.startswith("A") and len(code) == 7 else code
    return code.split("_")[0]


async def _json(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _ok_json(body: dict[str, Any], api_id: str) -> JSONResponse:
    return JSONResponse(body, headers={"api-id": api_id, "cont-yn": "N", "next-key": ""}, media_type=JSON_CT)


def create_app(sim: Simulator) -> Starlette:
    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.05)
            if sim.engine.speed > 0:
                sim.engine.now()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from autotrade.domain.calendar import warm_up

        await asyncio.to_thread(warm_up)  # orders need the KRX calendar: load it before the first request
        task = asyncio.create_task(ticker())
        try:
            yield
        finally:
            task.cancel()

    handler: Callable[[Request], Awaitable[Response]] = sim.admin
    routes = [
        Route("/oauth2/token", sim.token, methods=["POST"]),
        Route("/oauth2/revoke", sim.revoke, methods=["POST"]),
        *[Route(p, sim.dostk, methods=["POST"]) for p in ROUTES],
        WebSocketRoute("/api/dostk/websocket", sim.websocket),
        Route("/_sim/{rest:path}", handler, methods=["GET", "POST", "DELETE"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
