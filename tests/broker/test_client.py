"""KiwoomClient over real HTTP against the fake server: token TRs, headers, error envelopes, transports."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from autotrade.broker.client import KiwoomClient, TransportChoice
from autotrade.broker.errors import (
    BrokerConnectionError,
    BrokerError,
    BrokerTimeoutError,
    CredentialsError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    SymbolError,
    TokenExpiredError,
)
from tests.broker.conftest import APP_KEY, APP_SECRET
from tests.broker.fake_kiwoom import CONTENT_TYPE, FakeKiwoom, Fault, category_error, direct_error, serve

QUOTE = ("ka10001", "/api/dostk/stkinfo", {"stk_cd": "005930"})


@pytest.fixture(params=["httpx", "aiohttp"])
async def any_client(request: pytest.FixtureRequest, base_url: str) -> AsyncIterator[KiwoomClient]:
    async with KiwoomClient(
        base_url, transport=request.param, rate_per_second=100, burst=100, timeout=2.0
    ) as c:
        yield c


async def _token(client: KiwoomClient) -> str:
    return (await client.issue_token(APP_KEY, APP_SECRET)).token.get_secret_value()


async def test_issue_token_sends_only_content_type_and_exact_body(
    any_client: KiwoomClient, fake: FakeKiwoom
) -> None:
    issued = await any_client.issue_token(APP_KEY, APP_SECRET)
    sent = fake.of("au10001")[0]
    assert sent.body == {"grant_type": "client_credentials", "appkey": APP_KEY, "secretkey": APP_SECRET}
    assert sent.headers["content-type"] == CONTENT_TYPE
    assert "authorization" not in sent.headers and "api-id" not in sent.headers
    assert issued.token.get_secret_value() == fake.issued[0]
    assert issued.expires_at.tzinfo is not None


async def test_wrong_secret_is_a_credentials_error(client: KiwoomClient) -> None:
    with pytest.raises(CredentialsError) as info:
        await client.issue_token(APP_KEY, "WRONG-SECRET")
    assert info.value.code == 8001 and not info.value.retry_safe


async def test_revoke_token(client: KiwoomClient, fake: FakeKiwoom) -> None:
    token = await _token(client)
    await client.revoke_token(APP_KEY, APP_SECRET, token)
    assert fake.revoked == [token]
    assert fake.of("au10002")[0].body == {"appkey": APP_KEY, "secretkey": APP_SECRET, "token": token}


async def test_tr_headers(any_client: KiwoomClient, fake: FakeKiwoom) -> None:
    token = await _token(any_client)
    page = await any_client.request(*QUOTE, token=token, key_id="alice")
    sent = fake.of("ka10001")[0]
    assert sent.headers["api-id"] == "ka10001"
    assert sent.headers["authorization"] == f"Bearer {token}"
    assert sent.headers["content-type"] == CONTENT_TYPE
    assert (sent.headers["cont-yn"], sent.headers["next-key"]) == ("N", "")
    assert page.body["cur_prc"] == "-70100" and not page.has_next


async def test_continuation_headers_both_ways(client: KiwoomClient, fake: FakeKiwoom) -> None:
    token = await _token(client)
    body = {"all_stk_tp": "0", "trde_tp": "0", "stk_cd": "", "stex_tp": "0"}
    fake.unfilled = fake.unfilled * 2  # four rows, two pages
    first = await client.request("ka10075", "/api/dostk/acnt", body, token=token, key_id="alice")
    assert first.has_next and first.next_key == "2"
    second = await client.request(
        "ka10075", "/api/dostk/acnt", body, token=token, key_id="alice", next_key=first.next_key
    )
    assert not second.has_next
    assert (fake.requests[-1].headers["cont-yn"], fake.requests[-1].headers["next-key"]) == ("Y", "2")


@pytest.mark.parametrize(
    ("fault", "cls", "code"),
    [
        (
            Fault(body=category_error(3, 8005, "Token이 유효하지 않습니다", "인증에 실패했습니다")),
            TokenExpiredError,
            8005,
        ),
        (Fault(body=direct_error(8005, "Token이 유효하지 않습니다")), TokenExpiredError, 8005),
        (
            Fault(body=category_error(5, 1700, "허용된 요청 개수를 초과하였습니다. API ID=ka10001")),
            RateLimitError,
            1700,
        ),
        (Fault(body=direct_error(1700, "허용된 요청 개수를 초과하였습니다")), RateLimitError, 1700),
        (Fault(status=429, body={}), RateLimitError, None),
        (Fault(status=429, body=category_error(5, 1700, "초과")), RateLimitError, 1700),
        (Fault(status=500, raw=b"<html>Internal Server Error</html>"), ServerError, None),
        (Fault(status=500, body=direct_error(1999, "예기치 못한 에러")), ServerError, 1999),
        (Fault(body=category_error(2, 1902, "종목 정보가 없습니다")), SymbolError, 1902),
        (Fault(status=200, raw=b"not json"), ResponseFormatError, None),
    ],
)
async def test_error_envelopes_over_http(
    any_client: KiwoomClient, fake: FakeKiwoom, fault: Fault, cls: type[BrokerError], code: int | None
) -> None:
    token = await _token(any_client)
    fake.script("ka10001", fault)
    with pytest.raises(cls) as info:
        await any_client.request(*QUOTE, token=token, key_id="alice")
    assert info.value.code == code
    assert info.value.api_id == "ka10001"


async def test_timeout(any_client: KiwoomClient, fake: FakeKiwoom) -> None:
    token = await _token(any_client)
    fake.script("ka10001", Fault(delay=3.0, body={"return_code": 0}))
    with pytest.raises(BrokerTimeoutError) as info:
        await any_client.request(*QUOTE, token=token, key_id="alice")
    assert info.value.retry_safe and not info.value.outcome_unknown


async def test_order_timeout_is_outcome_unknown(any_client: KiwoomClient, fake: FakeKiwoom) -> None:
    token = await _token(any_client)
    fake.script("kt10000", Fault(delay=3.0, accept=True, body={"return_code": 0, "ord_no": "x"}))
    body = {
        "dmst_stex_tp": "KRX",
        "stk_cd": "005930",
        "ord_qty": "1",
        "ord_uv": "",
        "trde_tp": "3",
        "cond_uv": "",
    }
    with pytest.raises(BrokerTimeoutError) as info:
        await any_client.request("kt10000", "/api/dostk/ordr", body, token=token, key_id="alice")
    assert info.value.outcome_unknown and not info.value.retry_safe
    assert len(fake.orders) == 1  # it was placed: exactly why the order service must reconcile


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_connection_refused_is_safe_to_retry(transport: TransportChoice) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with KiwoomClient(f"http://127.0.0.1:{port}", transport=transport) as client:
        with pytest.raises(BrokerConnectionError) as info:
            await client.request(*QUOTE, token="t", key_id="alice")
    assert info.value.retry_safe and not info.value.outcome_unknown


async def test_asgi_transport_for_pure_unit_tests() -> None:
    fake = FakeKiwoom()
    transport = httpx.ASGITransport(app=fake.app())
    async with KiwoomClient("http://kiwoom.test", transport=transport) as client:
        token = await _token(client)
        page = await client.request(*QUOTE, token=token, key_id="alice")
    assert page.body["stk_cd"] == "005930"


async def test_unknown_transport_name() -> None:
    with pytest.raises(ValueError, match="unknown transport"):
        KiwoomClient("http://x", transport="curl")  # type: ignore[arg-type]


async def test_one_pool_serves_many_concurrent_requests(fake: FakeKiwoom) -> None:
    async with (
        serve(fake.app()) as url,
        KiwoomClient(url, transport="aiohttp", rate_per_second=1000, burst=1000) as c,
    ):
        token = await _token(c)
        pages = await asyncio.gather(*(c.request(*QUOTE, token=token, key_id=f"k{i}") for i in range(50)))
    assert len(pages) == 50
