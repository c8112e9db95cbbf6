"""The real client against the simulator over real HTTP: every message, envelopes, continuation, token
expiry and each fault kind. Also pins raw wire shapes to the protocol notes (strings, signs, headers)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from autotrade.broker import (
    BrokerError,
    Credentials,
    KiwoomClient,
    KiwoomSession,
    RateLimitError,
    TokenManager,
    TradeType,
)
from autotrade.broker.feed import WebSocketPriceFeed
from autotrade.domain.krx import KST
from autotrade.sim.server import RunningSimulator, running_simulator

START = datetime(2026, 11, 24, 9, 30, tzinfo=KST)


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    with running_simulator(seed=11, start=START, page_size=3, ping_seconds=0.3) as s:
        s.admin.add_stocks(
            [{"code": f"00{i}930", "name": f"종목{i}", "prev_close": 10_000 * (i + 1)} for i in range(6)]
        )
        SIM[:] = [s]
        yield s


@pytest.fixture
def account(sim: RunningSimulator, request: pytest.FixtureRequest) -> dict[str, Any]:
    no = f"{abs(hash(request.node.name)) % 10**10:010d}"
    sim.admin.create_account(no, "홍길동", 50_000_000)
    return sim.admin.create_appkey(no)


SIM: list[RunningSimulator] = []


def session(client: KiwoomClient, key: dict[str, Any]) -> tuple[KiwoomSession, TokenManager]:
    async def creds() -> Credentials:
        return Credentials(app_key=SecretStr(key["appkey"]), app_secret=SecretStr(key["secretkey"]))

    # Token expiry is in the simulator's virtual time, so the token manager reads that clock.
    tm = TokenManager(client, key["appkey"][:8], creds, clock=SIM[0].engine.now)
    return KiwoomSession(client, key["appkey"][:8], tm), tm


def raw(
    sim: RunningSimulator, api_id: str, path: str, body: dict[str, Any], token: str, **headers: str
) -> httpx.Response:
    return httpx.post(
        sim.base_url + path,
        json=body,
        headers={
            "Content-Type": "application/json;charset=UTF-8",
            "api-id": api_id,
            "authorization": f"Bearer {token}",
            "cont-yn": headers.get("cont_yn", "N"),
            "next-key": headers.get("next_key", ""),
        },
    )


def token_for(sim: RunningSimulator, key: dict[str, Any]) -> str:
    r = httpx.post(
        sim.base_url + "/oauth2/token",
        json={"grant_type": "client_credentials", "appkey": key["appkey"], "secretkey": key["secretkey"]},
    )
    body = r.json()
    assert r.status_code == 200 and body["return_code"] == 0 and body["token_type"].lower() == "bearer"
    assert len(body["expires_dt"]) == 14 and body["expires_dt"].isdigit()
    return str(body["token"])


def test_wire_shapes_match_the_notes(sim: RunningSimulator, account: dict[str, Any]) -> None:
    token = token_for(sim, account)
    r = raw(sim, "kt00001", "/api/dostk/acnt", {"qry_tp": "3"}, token)
    assert r.headers["api-id"] == "kt00001" and r.headers["cont-yn"] == "N"
    body = r.json()
    assert body["return_code"] == 0 and isinstance(body["entr"], str) and body["ord_alow_amt"] == "50000000"
    buy = raw(
        sim,
        "kt10000",
        "/api/dostk/ordr",
        {
            "dmst_stex_tp": "KRX",
            "stk_cd": "000930",
            "ord_qty": "3",
            "ord_uv": "",
            "trde_tp": "3",
            "cond_uv": "",
        },
        token,
    ).json()
    assert len(buy["ord_no"]) == 7 and buy["ord_no"].isdigit()
    q = raw(sim, "ka10001", "/api/dostk/stkinfo", {"stk_cd": "000930"}, token).json()
    assert q["cur_prc"].lstrip("+-").isdigit() and q["base_pric"] == "10000"
    holdings = raw(sim, "kt00018", "/api/dostk/acnt", {"qry_tp": "1", "dmst_stex_tp": "KRX"}, token).json()
    row = holdings["acnt_evlt_remn_indv_tot"][0]
    assert row["stk_cd"] == "A000930" and row["rmnd_qty"] == "3"
    cntr = raw(
        sim, "ka10076", "/api/dostk/acnt", {"qry_tp": "0", "sell_tp": "0", "stex_tp": "0"}, token
    ).json()
    assert cntr["cntr"][0]["io_tp_nm"] == "+매수" and cntr["cntr"][0]["cntr_qty"] == "3"


def test_error_envelopes(sim: RunningSimulator, account: dict[str, Any]) -> None:
    token = token_for(sim, account)
    wrong = raw(sim, "kt10000", "/api/dostk/acnt", {}, token).json()
    assert wrong["return_code"] == 2 and "[1504:" in wrong["return_msg"]
    bad_token = raw(sim, "kt00001", "/api/dostk/acnt", {"qry_tp": "3"}, "nope").json()
    assert bad_token["return_code"] == 3 and "[8005:" in bad_token["return_msg"]
    bad_key = httpx.post(
        sim.base_url + "/oauth2/token",
        json={"grant_type": "client_credentials", "appkey": "x", "secretkey": "y"},
    ).json()
    assert "[8001:" in bad_key["return_msg"]


async def test_client_against_simulator(sim: RunningSimulator, account: dict[str, Any]) -> None:
    async with KiwoomClient(sim.base_url) as client:
        s, tm = session(client, account)
        assert (await s.deposit()).orderable == 50_000_000
        codes = [f"00{i}930" for i in range(6)]
        for code in codes:
            await s.buy(code, 2, None, TradeType.MARKET)
        holdings = (await s.holdings()).holdings
        assert (
            sorted(h.code for h in holdings) == codes
        )  # six rows over pages of three: continuation followed
        assert len(await s.filled_orders()) == 6
        limit = await s.sell("000930", 1, 11_000, TradeType.LIMIT)
        unfilled = await s.unfilled_orders()
        assert [u.order_no for u in unfilled] == [limit.order_no]
        # Modify (kt10002): one share moves to a new price under a new number, the original ends.
        moved = await s.modify(limit.order_no, "000930", 0, 11_500)
        assert moved.order_no not in (limit.order_no, "") and moved.orig_order_no == limit.order_no
        (still_open,) = await s.unfilled_orders()
        assert still_open.order_no == moved.order_no and still_open.price == 11_500
        with pytest.raises(BrokerError):  # the original has nothing left to modify
            await s.modify(limit.order_no, "000930", 0, 11_600)
        cancel = await s.cancel(moved.order_no, "000930")
        assert cancel.order_no != moved.order_no and await s.unfilled_orders() == []
        with pytest.raises(BrokerError) as refused:  # a definite refusal: nothing placed, no resend
            await s.sell("000930", 100, None, TradeType.MARKET)
        assert not refused.value.retry_safe and not refused.value.outcome_unknown
        quote = await s.quote("001930")
        assert quote.base_price == 20_000 and quote.upper_limit == 26_000
        # Token expiry: the next call refreshes once and succeeds.
        sim.admin.expire_tokens(account["appkey"])
        assert (await s.deposit()).cash > 0
        assert tm.issued_count == 2
        # Revoke (au10002): the broker refuses the old token; the next call issues a new one.
        old = await tm.token()
        await tm.revoke()
        refused = raw(sim, "kt00001", "/api/dostk/acnt", {"qry_tp": "3"}, old).json()
        assert refused["return_code"] == 3 and "[8005:" in refused["return_msg"]
        assert (await s.deposit()).cash > 0 and tm.issued_count == 3


@pytest.mark.parametrize("kind", ["http_500", "http_429", "latency", "token_expiry"])
async def test_query_faults_are_retried(sim: RunningSimulator, account: dict[str, Any], kind: str) -> None:
    async with KiwoomClient(sim.base_url, retry_base_delay=0.01) as client:
        s, _ = session(client, account)
        await s.deposit()
        sim.admin.add_fault(kind, path="/api/dostk/acnt", api_id="kt00001", count=1, latency_ms=50, seed=1)
        try:
            assert (await s.deposit()).cash == 50_000_000
            assert sim.admin.faults()["counts"].get(kind, 0) >= 1
        finally:
            sim.admin.clear_faults()


async def test_dropped_order_response_is_outcome_unknown(
    sim: RunningSimulator, account: dict[str, Any]
) -> None:
    """The order is processed but its answer lost: the client cannot know the outcome; the broker has it."""
    async with KiwoomClient(sim.base_url) as client:
        s, _ = session(client, account)
        sim.admin.add_fault("drop_after_accept", path="/api/dostk/ordr", count=1)
        try:
            with pytest.raises(BrokerError) as exc:
                await s.buy("000930", 1, None, TradeType.MARKET)
            assert exc.value.outcome_unknown and not exc.value.retry_safe
        finally:
            sim.admin.clear_faults()
        assert [f.filled_quantity for f in await s.filled_orders()] == [1]


async def test_order_rate_limit_is_not_processed(sim: RunningSimulator, account: dict[str, Any]) -> None:
    async with KiwoomClient(sim.base_url, retry_base_delay=0.01) as client:
        s = KiwoomSession(client, "k", session(client, account)[1], order_rate_limit_resends=0)
        sim.admin.add_fault("http_429", path="/api/dostk/ordr", count=1)
        try:
            with pytest.raises(RateLimitError):
                await s.buy("000930", 1, None, TradeType.MARKET)
        finally:
            sim.admin.clear_faults()
        assert await s.filled_orders() == []


async def test_websocket_feed_ping_and_reconnect(sim: RunningSimulator, account: dict[str, Any]) -> None:
    async with KiwoomClient(sim.base_url) as client:
        _, tm = session(client, account)
        feed = WebSocketPriceFeed(sim.ws_url, tm, reconnect_base_delay=0.05)
        await feed.subscribe(["002930"])
        await asyncio.wait_for(feed.wait_connected(), 5)
        tick = await publish_until_seen(sim, feed, "002930", 31_000)
        assert (tick.code, tick.price) == ("002930", 31_000)
        assert feed.connections == 1
        sim.admin.add_fault("ws_disconnect", count=1)
        # The next PING echo (every 0.3 s) trips the disconnect fault and the feed reconnects: wait for the
        # second connection itself, as long as a loaded machine needs (bounded), not for a fixed 0.8 s.
        async with asyncio.timeout(15):
            while feed.connections < 2:  # noqa: ASYNC110 - the feed has no event for a reconnect
                await asyncio.sleep(0.05)
        sim.admin.clear_faults()
        await asyncio.wait_for(feed.wait_connected(), 5)
        tick = await publish_until_seen(sim, feed, "002930", 31_500)
        assert tick.price == 31_500
        assert feed.connections == 2
        await feed.aclose()


async def publish_until_seen(sim: RunningSimulator, feed: WebSocketPriceFeed, code: str, price: int) -> Any:
    """The REG frame travels on its own; publish until the subscription is live on the server (bounded)."""
    for _ in range(50):
        sim.admin.set_price(code, price)
        try:
            return await asyncio.wait_for(anext(aiter(feed.ticks())), 0.1)
        except TimeoutError:
            continue
    raise AssertionError(f"no tick for {code} at {price}")
