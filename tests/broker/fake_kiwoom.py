"""A small fake Kiwoom server speaking the wire protocol of KIWOOM.md, for the broker client's tests.

Not the simulator (autotrade/sim): no market engine, just canned data, strict protocol checks and scripted
faults. Everything a test needs to assert is recorded: requests with their headers and arrival times,
issued and revoked tokens, placed orders, WebSocket logins, PING echoes and registrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

KST = timezone(timedelta(hours=9))
CONTENT_TYPE = "application/json;charset=UTF-8"
OK = {"return_code": 0, "return_msg": "정상적으로 처리되었습니다"}

GROUPS: dict[str, set[str]] = {
    "ordr": {"kt10000", "kt10001", "kt10002", "kt10003"},
    "acnt": {"kt00001", "kt00018", "ka10075", "ka10076"},
    "stkinfo": {"ka10001"},
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "kt10000": ("dmst_stex_tp", "stk_cd", "ord_qty", "ord_uv", "trde_tp"),
    "kt10001": ("dmst_stex_tp", "stk_cd", "ord_qty", "ord_uv", "trde_tp"),
    "kt10002": ("dmst_stex_tp", "orig_ord_no", "stk_cd", "mdfy_qty", "mdfy_uv"),
    "kt10003": ("dmst_stex_tp", "orig_ord_no", "stk_cd", "cncl_qty"),
    "kt00001": ("qry_tp",),
    "kt00018": ("qry_tp", "dmst_stex_tp"),
    "ka10075": ("all_stk_tp", "trde_tp", "stex_tp"),
    "ka10076": ("qry_tp", "sell_tp", "stex_tp"),
    "ka10001": ("stk_cd",),
}
UNPRICED_TRADE_TYPES = {"3", "6", "7", "13", "16", "23", "26", "29", "30", "31", "61", "81"}
TRADE_TYPES = UNPRICED_TRADE_TYPES | {"0", "5", "10", "20", "28", "62"}


def category_error(category: int, code: int, text: str, head: str = "요청에 실패했습니다") -> dict[str, Any]:
    """The observed wire shape: a category in return_code, the detailed code in brackets."""
    return {"return_code": category, "return_msg": f"{head}[{code}:{text}]"}


def direct_error(code: int, text: str) -> dict[str, Any]:
    """The shape OFF client.py checks: the detailed code itself in return_code."""
    return {"return_code": code, "return_msg": text}


TOKEN_INVALID = category_error(3, 8005, "Token이 유효하지 않습니다", "인증에 실패했습니다")


@dataclass
class Fault:
    """A scripted answer for the next request of one api-id.

    ``accept`` first processes the request (an order is placed) and then answers with the fault: the
    "response lost after the broker accepted the order" case.
    """

    status: int = 200
    body: dict[str, Any] | None = None
    raw: bytes | None = None
    delay: float = 0.0
    accept: bool = False
    skip: int = 0  # let this many requests through normally first


@dataclass
class Recorded:
    api_id: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float


@dataclass
class FakeKiwoom:
    keys: dict[str, str] = field(default_factory=lambda: {"APPKEY-ALICE": "SECRET-ALICE"})
    token_lifetime: timedelta = timedelta(hours=24)
    page_size: int = 2
    enforce_rate: tuple[float, int] | None = None  # (per second, burst) per (appkey, api-id)
    ping_interval: float = 0.05

    tokens: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    issued: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    faults: dict[str, deque[Fault]] = field(default_factory=lambda: defaultdict(deque))
    orders: list[dict[str, Any]] = field(default_factory=list)
    rate_rejections: int = 0

    ws_logins: list[str] = field(default_factory=list)
    pings_sent: list[str] = field(default_factory=list)
    ping_echoes: list[str] = field(default_factory=list)
    reg_messages: list[dict[str, Any]] = field(default_factory=list)
    sockets: dict[WebSocket, set[str]] = field(default_factory=dict)

    deposit: dict[str, Any] = field(
        default_factory=lambda: {
            "entr": "000000010000000",
            "ord_alow_amt": "000000009500000",
            "pymn_alow_amt": "000000009000000",
            "d1_entra": "000000010000000",
            "d2_entra": "000000008000000",
            "100stk_ord_alow_amt": "000000009400000",
            "stk_entr_prst": [],
        }
    )
    holdings: list[dict[str, str]] = field(default_factory=lambda: [dict(r) for r in HOLDINGS])
    unfilled: list[dict[str, str]] = field(default_factory=lambda: [dict(r) for r in UNFILLED])
    filled: list[dict[str, str]] = field(default_factory=lambda: [dict(r) for r in FILLED])
    quotes: dict[str, dict[str, str]] = field(default_factory=lambda: {q["stk_cd"]: dict(q) for q in QUOTES})

    _buckets: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)

    # -------------------------------------------------------------------------------------------------
    # Test controls

    def script(self, api_id: str, *faults: Fault) -> None:
        self.faults[api_id].extend(faults)

    def expire_tokens(self) -> None:
        past = datetime.now(UTC) - timedelta(seconds=1)
        self.tokens = {t: (k, past) for t, (k, _) in self.tokens.items()}

    def of(self, api_id: str) -> list[Recorded]:
        return [r for r in self.requests if r.api_id == api_id]

    async def push_trade(self, code: str, values: dict[str, str]) -> int:
        """Send a 0B REAL push to every socket registered for ``code``; returns how many got it."""
        message = {
            "trnm": "REAL",
            "data": [{"type": "0B", "name": "주식체결", "item": code, "values": values}],
        }
        sent = 0
        for ws, codes in list(self.sockets.items()):
            if code in codes:
                with contextlib.suppress(Exception):
                    await ws.send_text(json.dumps(message, ensure_ascii=False))
                    sent += 1
        return sent

    async def push_order_execution(self, values: dict[str, str]) -> None:
        message = {"trnm": "REAL", "data": [{"type": "00", "name": "주문체결", "item": "", "values": values}]}
        for ws, codes in list(self.sockets.items()):
            if "" in codes:
                await ws.send_text(json.dumps(message, ensure_ascii=False))

    async def drop_sockets(self) -> None:
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1011)

    # -------------------------------------------------------------------------------------------------
    # ASGI app

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/oauth2/token", self._token, methods=["POST"]),
                Route("/oauth2/revoke", self._revoke, methods=["POST"]),
                Route("/api/dostk/{group}", self._tr, methods=["POST"]),
                WebSocketRoute("/api/dostk/websocket", self._websocket),
            ]
        )

    async def _token(self, request: Request) -> Response:
        body = await _json(request)
        self.requests.append(
            Recorded("au10001", "/oauth2/token", dict(request.headers), body, time.monotonic())
        )
        if request.headers.get("content-type") != CONTENT_TYPE:
            return JSONResponse(category_error(2, 1513, "Content-Type 헤더가 올바르지 않습니다"))
        if body.get("grant_type") != "client_credentials":
            return JSONResponse(category_error(3, 8011, "grant_type이 올바르지 않습니다"))
        if self.keys.get(str(body.get("appkey"))) != body.get("secretkey"):
            return JSONResponse(category_error(3, 8001, "App Key와 Secret Key 검증에 실패했습니다"))
        if fault := self._next_fault("au10001"):
            return await self._fault_response(fault)
        token = f"TOKEN-{len(self.issued) + 1}-{body['appkey']}"
        expires = datetime.now(UTC) + self.token_lifetime
        self.tokens[token] = (str(body["appkey"]), expires)
        self.issued.append(token)
        answer = {
            **OK,
            "token_type": "Bearer",
            "token": token,
            "expires_dt": expires.astimezone(KST).strftime("%Y%m%d%H%M%S"),
        }
        return JSONResponse(answer)

    async def _revoke(self, request: Request) -> Response:
        body = await _json(request)
        self.requests.append(
            Recorded("au10002", "/oauth2/revoke", dict(request.headers), body, time.monotonic())
        )
        if self.keys.get(str(body.get("appkey"))) != body.get("secretkey"):
            return JSONResponse(category_error(3, 8001, "App Key와 Secret Key 검증에 실패했습니다"))
        token = str(body.get("token"))
        if self.tokens.pop(token, None) is None:
            return JSONResponse(category_error(3, 8016, "토큰 폐기에 실패했습니다"))
        self.revoked.append(token)
        return JSONResponse(OK)

    async def _tr(self, request: Request) -> Response:
        group = request.path_params["group"]
        api_id = request.headers.get("api-id", "")
        body = await _json(request)
        self.requests.append(
            Recorded(api_id, request.url.path, dict(request.headers), body, time.monotonic())
        )
        problem = self._check_request(request, group, api_id, body)
        if problem is not None:
            return JSONResponse(problem)
        if self._rate_limited(str(self.tokens[_bearer(request)][0]), api_id):
            self.rate_rejections += 1
            return JSONResponse(
                category_error(5, 1700, f"허용된 요청 개수를 초과하였습니다. API ID={api_id}")
            )
        fault = self._next_fault(api_id)
        if fault is not None and not fault.accept:
            return await self._fault_response(fault)
        answer, cont, next_key = self._handle(api_id, body, request.headers.get("next-key", ""))
        if fault is not None:
            return await self._fault_response(fault)
        headers = {"api-id": api_id, "cont-yn": "Y" if cont else "N", "next-key": next_key}
        return JSONResponse({**OK, **answer}, headers=headers)

    def _check_request(
        self, request: Request, group: str, api_id: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        headers = request.headers
        if headers.get("content-type") != CONTENT_TYPE:
            return category_error(2, 1513, "Content-Type 헤더가 올바르지 않습니다")
        if not api_id:
            return category_error(2, 1501, "API ID가 없습니다")
        if api_id not in GROUPS.get(group, set()):
            return category_error(2, 1504, f"해당 URI에서는 지원하지 않는 API ID입니다. API ID={api_id}")
        if "cont-yn" not in headers or "next-key" not in headers:
            return category_error(2, 1512, "cont-yn/next-key 헤더가 없습니다")
        if not headers.get("authorization", "").startswith("Bearer "):
            return category_error(2, 1514, "authorization 헤더가 없습니다")
        record = self.tokens.get(_bearer(request))
        if record is None or record[1] <= datetime.now(UTC):
            return TOKEN_INVALID
        if not all(isinstance(v, str) for v in body.values()):
            return category_error(2, 1517, "입력 값 형식이 올바르지 않습니다(모든 값은 문자열)")
        missing = [f for f in REQUIRED[api_id] if f not in body]
        if missing:
            return category_error(2, 1511, f"필수 입력 값에 값이 존재하지 않습니다[{missing[0]}]")
        return None

    def _rate_limited(self, appkey: str, api_id: str) -> bool:
        if self.enforce_rate is None:
            return False
        rate, burst = self.enforce_rate
        now = time.monotonic()
        tokens, updated = self._buckets.get((appkey, api_id), (float(burst), now))
        tokens = min(float(burst), tokens + (now - updated) * rate)
        # 30 ms of slack for timer jitter between the client's clock and ours.
        if tokens < 1.0 - 0.03 * rate:
            self._buckets[(appkey, api_id)] = (tokens, now)
            return True
        self._buckets[(appkey, api_id)] = (tokens - 1.0, now)
        return False

    def _next_fault(self, api_id: str) -> Fault | None:
        queue = self.faults.get(api_id)
        if not queue:
            return None
        if queue[0].skip > 0:
            queue[0].skip -= 1
            return None
        return queue.popleft()

    async def _fault_response(self, fault: Fault) -> Response:
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.raw is not None:
            return Response(fault.raw, status_code=fault.status, media_type="text/html")
        return JSONResponse(fault.body or {}, status_code=fault.status)

    # -------------------------------------------------------------------------------------------------
    # TR handlers: (body, cont-yn, next-key)

    def _handle(self, api_id: str, body: dict[str, Any], next_key: str) -> tuple[dict[str, Any], bool, str]:
        if api_id in ("kt10000", "kt10001", "kt10002", "kt10003"):
            return self._order(api_id, body), False, ""
        if api_id == "kt00001":
            return dict(self.deposit), False, ""
        if api_id == "kt00018":
            totals = {
                "tot_pur_amt": "000000002000000",
                "tot_evlt_amt": "000000002100000",
                "tot_evlt_pl": "000000000100000",
                "tot_prft_rt": "5.00",
                "prsm_dpst_aset_amt": "000000012100000",
            }
            return self._paged(totals, "acnt_evlt_remn_indv_tot", self.holdings, next_key)
        if api_id == "ka10075":
            rows = [
                r for r in self.unfilled if body["all_stk_tp"] == "0" or r["stk_cd"] == body.get("stk_cd")
            ]
            return self._paged({}, "oso", rows, next_key)
        if api_id == "ka10076":
            rows = [r for r in self.filled if body["qry_tp"] == "0" or r["stk_cd"] == body.get("stk_cd")]
            return self._paged({}, "cntr", rows, next_key)
        if api_id == "ka10001":
            quote = self.quotes.get(body["stk_cd"])
            if quote is None:
                return category_error(2, 1902, "종목 정보가 없습니다"), False, ""
            return dict(quote), False, ""
        raise AssertionError(api_id)

    def _paged(
        self, head: dict[str, Any], key: str, rows: list[dict[str, str]], next_key: str
    ) -> tuple[dict[str, Any], bool, str]:
        start = int(next_key or 0)
        end = start + self.page_size
        return {**head, key: rows[start:end]}, end < len(rows), str(end) if end < len(rows) else ""

    def _order(self, api_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if api_id in ("kt10000", "kt10001"):
            if body["trde_tp"] not in TRADE_TYPES:
                return category_error(2, 1517, "매매구분이 올바르지 않습니다")
            if (body["ord_uv"] == "") != (body["trde_tp"] in UNPRICED_TRADE_TYPES):
                return category_error(2, 1517, "주문단가가 올바르지 않습니다")
            if body["stk_cd"] not in self.quotes:
                return category_error(2, 1902, "종목 정보가 없습니다")
        order_no = f"{len(self.orders) + 1:07d}"
        self.orders.append({"api_id": api_id, "ord_no": order_no, **body})
        answer: dict[str, Any] = {"ord_no": order_no, "dmst_stex_tp": body["dmst_stex_tp"]}
        if api_id in ("kt10002", "kt10003"):
            answer["base_orig_ord_no"] = body["orig_ord_no"]
        return answer

    # -------------------------------------------------------------------------------------------------
    # WebSocket

    async def _websocket(self, ws: WebSocket) -> None:
        await ws.accept()
        try:
            if not await self._ws_login(ws):
                await ws.close()
                return
            self.sockets[ws] = set()
            pinger = asyncio.create_task(self._ping(ws))
            try:
                while True:
                    await self._ws_message(ws, await ws.receive_text())
            finally:
                pinger.cancel()
                self.sockets.pop(ws, None)
        except (WebSocketDisconnect, RuntimeError):
            self.sockets.pop(ws, None)

    async def _ws_login(self, ws: WebSocket) -> bool:
        message = json.loads(await ws.receive_text())
        token = str(message.get("token", ""))
        self.ws_logins.append(token)
        record = self.tokens.get(token)
        if message.get("trnm") != "LOGIN" or record is None or record[1] <= datetime.now(UTC):
            await ws.send_text(json.dumps({"trnm": "LOGIN", **TOKEN_INVALID}, ensure_ascii=False))
            return False
        await ws.send_text(json.dumps({"trnm": "LOGIN", "return_code": 0, "return_msg": ""}))
        return True

    async def _ping(self, ws: WebSocket) -> None:
        n = 0
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(self.ping_interval)
                n += 1
                # Field order and spacing kept unusual so an echo that re-serialises would differ.
                text = '{"trnm": "PING",  "seq":' + str(n) + "}"
                self.pings_sent.append(text)
                await ws.send_text(text)

    async def _ws_message(self, ws: WebSocket, text: str) -> None:
        message = json.loads(text)
        trnm = message.get("trnm")
        if trnm == "PING":
            self.ping_echoes.append(text)
        elif trnm in ("REG", "REMOVE"):
            self.reg_messages.append(message)
            items = {i for d in message["data"] for i in d["item"]}
            if trnm == "REG":
                if message.get("refresh") == "0":
                    self.sockets[ws] = set()
                self.sockets[ws] |= items
            else:
                self.sockets[ws] -= items
            await ws.send_text(json.dumps({"trnm": trnm, "return_code": 0, "return_msg": ""}))


def _bearer(request: Request) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ")


async def _json(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body())
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn over real HTTP on a free loopback port; yields the base URL.

    Calls uvicorn's startup/shutdown directly instead of ``serve()``: its main loop polls for exit every
    100 ms, which would add a fifth of a second to every test.
    """
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="websockets-sansio"
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.force_exit = True
        await server.shutdown()


HOLDINGS = [
    {
        "stk_cd": "A005930",
        "stk_nm": "삼성전자",
        "rmnd_qty": "000000000010",
        "trde_able_qty": "000000000010",
        "pur_pric": "000000070000",
        "cur_prc": "-000000071000",
        "evlt_amt": "000000710000",
        "evltv_prft": "000000010000",
        "prft_rt": "1.43",
        "pur_amt": "000000700000",
    },
    {
        "stk_cd": "A000660",
        "stk_nm": "SK하이닉스",
        "rmnd_qty": "000000000005",
        "trde_able_qty": "000000000003",
        "pur_pric": "000000200000",
        "cur_prc": "+000000190000",
        "evlt_amt": "000000950000",
        "evltv_prft": "-000000050000",
        "prft_rt": "-5.00",
        "pur_amt": "000001000000",
    },
    {
        "stk_cd": "A035720",
        "stk_nm": "카카오",
        "rmnd_qty": "000000000007",
        "trde_able_qty": "000000000007",
        "pur_pric": "000000042850",
        "cur_prc": "000000043000",
        "evlt_amt": "000000301000",
        "evltv_prft": "000000001050",
        "prft_rt": "0.35",
        "pur_amt": "000000299950",
    },
]

UNFILLED = [
    {
        "ord_no": "0000101",
        "stk_cd": "005930",
        "stk_nm": "삼성전자",
        "ord_stt": "접수",
        "ord_qty": "10",
        "ord_pric": "70000",
        "oso_qty": "10",
        "cntr_tot_amt": "0",
        "orig_ord_no": "0000000",
        "io_tp_nm": "+매수",
        "trde_tp": "보통",
        "tm": "153512",
        "cntr_pric": "",
        "cntr_qty": "",
        "cur_prc": "-70100",
        "stop_pric": "",
    },
    {
        "ord_no": "0000102",
        "stk_cd": "000660",
        "stk_nm": "SK하이닉스",
        "ord_stt": "접수",
        "ord_qty": "3",
        "ord_pric": "210000",
        "oso_qty": "1",
        "cntr_tot_amt": "420000",
        "orig_ord_no": "0000000",
        "io_tp_nm": "-매도",
        "trde_tp": "보통",
        "tm": "101500",
        "cntr_pric": "210000",
        "cntr_qty": "2",
        "cur_prc": "+210500",
        "stop_pric": "",
    },
]

FILLED = [
    {
        "ord_no": "0000090",
        "stk_cd": "005930",
        "stk_nm": "삼성전자",
        "io_tp_nm": "+매수",
        "ord_pric": "0",
        "ord_qty": "000000000004",
        "cntr_pric": "70100",
        "cntr_qty": "000000000004",
        "oso_qty": "0",
        "tdy_trde_cmsn": "42",
        "tdy_trde_tax": "0",
        "ord_stt": "체결",
        "trde_tp": "시장가",
        "orig_ord_no": "0000000",
        "ord_tm": "090102",
        "stop_pric": "",
    },
    {
        "ord_no": "0000091",
        "stk_cd": "035720",
        "stk_nm": "카카오",
        "io_tp_nm": "-매도",
        "ord_pric": "43000",
        "ord_qty": "2",
        "cntr_pric": "43000",
        "cntr_qty": "2",
        "oso_qty": "0",
        "tdy_trde_cmsn": "12",
        "tdy_trde_tax": "172",
        "ord_stt": "체결",
        "trde_tp": "보통",
        "orig_ord_no": "0000000",
        "ord_tm": "093000",
        "stop_pric": "",
    },
    {
        "ord_no": "0000092",
        "stk_cd": "A000660",
        "stk_nm": "SK하이닉스",
        "io_tp_nm": "매수정정",
        "ord_pric": "200000",
        "ord_qty": "1",
        "cntr_pric": "200000",
        "cntr_qty": "1",
        "oso_qty": "0",
        "tdy_trde_cmsn": "30",
        "tdy_trde_tax": "0",
        "ord_stt": "체결",
        "trde_tp": "보통",
        "orig_ord_no": "0000080",
        "ord_tm": "100000",
        "stop_pric": "",
    },
]

QUOTES = [
    {
        "stk_cd": "005930",
        "stk_nm": "삼성전자",
        "cur_prc": "-70100",
        "pred_pre": "-900",
        "flu_rt": "-1.27",
        "trde_qty": "12345678",
        "open_pric": "+71000",
        "high_pric": "+71500",
        "low_pric": "-70000",
        "base_pric": "71000",
        "upl_pric": "+92300",
        "lst_pric": "-49700",
        "250hgst": "+88800",
    },
    {
        "stk_cd": "000660",
        "stk_nm": "SK하이닉스",
        "cur_prc": "+210500",
        "pred_pre": "+500",
        "flu_rt": "+0.24",
        "trde_qty": "100",
    },
    {
        "stk_cd": "035720",
        "stk_nm": "카카오",
        "cur_prc": "43000",
        "pred_pre": "0",
        "flu_rt": "0.00",
        "trde_qty": "5",
    },
]
