"""KiwoomSession against the fake server: every TR, continuation, token refresh, retry policy."""

from __future__ import annotations

import asyncio
from datetime import time
from decimal import Decimal

import pytest

from autotrade.broker.client import KiwoomClient
from autotrade.broker.errors import (
    BrokerTimeoutError,
    InputError,
    OrderRejectedError,
    RateLimitError,
    ServerError,
    SymbolError,
    TokenExpiredError,
)
from autotrade.broker.messages import Side, TradeType
from autotrade.broker.session import KiwoomSession
from autotrade.broker.tokens import TokenManager
from tests.broker.conftest import CredentialLoader
from tests.broker.fake_kiwoom import TOKEN_INVALID, FakeKiwoom, Fault, category_error, direct_error

RATE_LIMITED = category_error(5, 1700, "허용된 요청 개수를 초과하였습니다. API ID=kt10000")


# --- orders --------------------------------------------------------------------------------------------


async def test_buy_limit(session: KiwoomSession, fake: FakeKiwoom) -> None:
    ack = await session.buy("A005930", 10, 70000)
    assert ack.order_no == "0000001"
    sent = fake.of("kt10000")[0]
    assert sent.path == "/api/dostk/ordr"
    assert sent.body == {
        "dmst_stex_tp": "KRX",
        "stk_cd": "005930",
        "ord_qty": "10",
        "ord_uv": "70000",
        "trde_tp": "0",
        "cond_uv": "",
    }


@pytest.mark.parametrize("trade_type", [TradeType.MARKET, TradeType.AFTER_HOURS_CLOSE, TradeType.PRE_MARKET])
async def test_sell_priced_by_exchange_sends_empty_price(
    session: KiwoomSession, fake: FakeKiwoom, trade_type: TradeType
) -> None:
    ack = await session.sell("005930", 3, None, trade_type)
    assert ack.order_no == fake.orders[0]["ord_no"]
    assert fake.orders[0]["api_id"] == "kt10001"
    assert (fake.orders[0]["ord_uv"], fake.orders[0]["trde_tp"]) == ("", trade_type.value)


async def test_stop_limit_sends_condition_price(session: KiwoomSession, fake: FakeKiwoom) -> None:
    await session.sell("005930", 1, 66500, TradeType.STOP_LIMIT, stop_price=66600)
    assert (fake.orders[0]["ord_uv"], fake.orders[0]["cond_uv"]) == ("66500", "66600")


@pytest.mark.parametrize(
    ("price", "trade_type", "stop"),
    [
        (None, TradeType.LIMIT, None),
        (70000, TradeType.MARKET, None),
        (0, TradeType.LIMIT, None),
        (70000, TradeType.LIMIT, 69000),
        (70000, TradeType.STOP_LIMIT, None),
    ],
)
async def test_invalid_orders_are_refused_locally(
    session: KiwoomSession, fake: FakeKiwoom, price: int | None, trade_type: TradeType, stop: int | None
) -> None:
    with pytest.raises(ValueError):
        await session.buy("005930", 1, price, trade_type, stop_price=stop)
    assert fake.of("kt10000") == []


async def test_bad_code_is_refused_locally(session: KiwoomSession) -> None:
    with pytest.raises(ValueError, match="six-character"):
        await session.buy("5930", 1, 70000)


async def test_modify_and_cancel(session: KiwoomSession, fake: FakeKiwoom) -> None:
    modified = await session.modify("0000101", "005930", 5, 69900)
    cancelled = await session.cancel("0000101", "005930")
    assert (modified.order_no, modified.orig_order_no) == ("0000001", "0000101")
    assert (cancelled.order_no, cancelled.orig_order_no) == ("0000002", "0000101")
    assert fake.of("kt10002")[0].body == {
        "dmst_stex_tp": "KRX",
        "orig_ord_no": "0000101",
        "stk_cd": "005930",
        "mdfy_qty": "5",
        "mdfy_uv": "69900",
        "mdfy_cond_uv": "",
    }
    assert fake.of("kt10003")[0].body == {
        "dmst_stex_tp": "KRX",
        "orig_ord_no": "0000101",
        "stk_cd": "005930",
        "cncl_qty": "0",
    }


async def test_order_business_reject_is_not_resent(session: KiwoomSession, fake: FakeKiwoom) -> None:
    fake.script("kt10000", Fault(body=category_error(1, 2000, "주문가능금액을 초과합니다")))
    with pytest.raises(OrderRejectedError) as info:
        await session.buy("005930", 1000, 70000)
    assert not info.value.retry_safe and not info.value.outcome_unknown
    assert len(fake.of("kt10000")) == 1 and fake.orders == []


async def test_order_unknown_symbol(session: KiwoomSession, fake: FakeKiwoom) -> None:
    with pytest.raises(SymbolError):
        await session.buy("999999", 1, 1000)
    assert len(fake.of("kt10000")) == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=500, raw=b"oops"),
        Fault(body=direct_error(1999, "예기치 못한 에러")),
        Fault(status=503, body={}, accept=True),
    ],
)
async def test_order_server_error_is_never_retried(
    session: KiwoomSession, fake: FakeKiwoom, fault: Fault
) -> None:
    fake.script("kt10000", fault)
    with pytest.raises(ServerError) as info:
        await session.buy("005930", 1, 70000)
    assert info.value.outcome_unknown and not info.value.retry_safe
    assert len(fake.of("kt10000")) == 1


async def test_order_timeout_is_never_retried(
    base_url: str, fake: FakeKiwoom, loader: CredentialLoader
) -> None:
    async with KiwoomClient(base_url, timeout=2.0, rate_per_second=100, burst=100) as client:
        session = KiwoomSession(client, "alice", TokenManager(client, "alice", loader))
        fake.script("kt10001", Fault(delay=3.0, accept=True))
        with pytest.raises(BrokerTimeoutError) as info:
            await session.sell("005930", 1, None, TradeType.MARKET)
    assert info.value.outcome_unknown
    assert len(fake.of("kt10001")) == 1 and len(fake.orders) == 1  # placed once, response lost


async def test_order_after_expired_token_refreshes_once_and_resends(
    session: KiwoomSession, fake: FakeKiwoom, loader: CredentialLoader
) -> None:
    await session.quote("005930")
    fake.expire_tokens()
    ack = await session.buy("005930", 1, 70000)
    assert ack.order_no == "0000001" and len(fake.orders) == 1
    assert len(fake.issued) == 2 and loader.calls == 2
    tokens_used = [r.headers["authorization"] for r in fake.of("kt10000")]
    assert tokens_used == [f"Bearer {fake.issued[0]}", f"Bearer {fake.issued[1]}"]


async def test_order_rate_limited_is_resent_once(session: KiwoomSession, fake: FakeKiwoom) -> None:
    fake.script("kt10000", Fault(body=RATE_LIMITED))
    ack = await session.buy("005930", 1, 70000)
    assert ack.order_no == "0000001" and len(fake.of("kt10000")) == 2


async def test_order_rate_limited_twice_gives_up(session: KiwoomSession, fake: FakeKiwoom) -> None:
    fake.script("kt10000", Fault(body=RATE_LIMITED), Fault(status=429, body={}))
    with pytest.raises(RateLimitError) as info:
        await session.buy("005930", 1, 70000)
    assert info.value.retry_safe  # nothing placed; the order service may send it again later
    assert len(fake.of("kt10000")) == 2 and fake.orders == []


# --- account and quotes ----------------------------------------------------------------------------------


async def test_deposit(session: KiwoomSession, fake: FakeKiwoom) -> None:
    deposit = await session.deposit()
    assert (deposit.cash, deposit.orderable, deposit.d2_cash, deposit.withdrawable) == (
        10_000_000,
        9_500_000,
        8_000_000,
        9_000_000,
    )
    assert deposit.orderable_100pct == 9_400_000
    assert fake.of("kt00001")[0].body == {"qry_tp": "3"}


async def test_holdings_follow_continuation(session: KiwoomSession, fake: FakeKiwoom) -> None:
    report = await session.holdings()
    assert [h.code for h in report.holdings] == ["005930", "000660", "035720"]
    hynix = report.holdings[1]
    assert (hynix.name, hynix.quantity, hynix.tradable_quantity, hynix.avg_price, hynix.current_price) == (
        "SK하이닉스",
        5,
        3,
        200_000,
        190_000,
    )
    assert hynix.profit_loss == -50_000 and hynix.profit_rate == Decimal("-5.00")
    assert (report.total_purchase, report.total_evaluation, report.estimated_assets) == (
        2_000_000,
        2_100_000,
        12_100_000,
    )
    pages = fake.of("kt00018")
    assert [(p.headers["cont-yn"], p.headers["next-key"]) for p in pages] == [("N", ""), ("Y", "2")]
    assert pages[0].body == pages[1].body == {"qry_tp": "1", "dmst_stex_tp": "KRX"}


async def test_holdings_empty_and_blank_rows(session: KiwoomSession, fake: FakeKiwoom) -> None:
    fake.holdings = [
        {"stk_cd": "", "stk_nm": "", "rmnd_qty": "", "trde_able_qty": "", "pur_pric": "", "cur_prc": ""}
    ]
    assert (await session.holdings()).holdings == ()


async def test_unfilled_orders(session: KiwoomSession, fake: FakeKiwoom) -> None:
    orders = await session.unfilled_orders()
    assert [(o.order_no, o.side, o.quantity, o.unfilled_quantity, o.price) for o in orders] == [
        ("0000101", Side.BUY, 10, 10, 70000),
        ("0000102", Side.SELL, 3, 1, 210000),
    ]
    assert orders[0].time == time(15, 35, 12) and orders[0].last_fill_price == 0
    assert orders[1].filled_amount == 420000
    one = await session.unfilled_orders("000660")
    assert [o.order_no for o in one] == ["0000102"]
    assert fake.of("ka10075")[-1].body == {
        "all_stk_tp": "1",
        "trde_tp": "0",
        "stk_cd": "000660",
        "stex_tp": "0",
    }


async def test_filled_orders_across_pages(session: KiwoomSession, fake: FakeKiwoom) -> None:
    fills = await session.filled_orders()
    assert [(f.order_no, f.code, f.side, f.filled_quantity, f.fill_price) for f in fills] == [
        ("0000090", "005930", Side.BUY, 4, 70100),
        ("0000091", "035720", Side.SELL, 2, 43000),
        ("0000092", "000660", Side.BUY, 1, 200000),
    ]
    assert (fills[1].fee, fills[1].tax, fills[1].time) == (12, 172, time(9, 30))
    assert len(fake.of("ka10076")) == 2
    assert [f.order_no for f in await session.filled_orders("035720")] == ["0000091"]


async def test_quote(session: KiwoomSession, fake: FakeKiwoom) -> None:
    q = await session.quote("A005930")
    assert (q.code, q.name, q.price, q.change, q.change_rate, q.volume) == (
        "005930",
        "삼성전자",
        70100,
        -900,
        Decimal("-1.27"),
        12_345_678,
    )
    assert (q.open, q.high, q.low, q.base_price, q.upper_limit, q.lower_limit) == (
        71000,
        71500,
        70000,
        71000,
        92300,
        49700,
    )
    assert fake.of("ka10001")[0].body == {"stk_cd": "005930"}


async def test_quote_unknown_symbol_is_not_retried(session: KiwoomSession, fake: FakeKiwoom) -> None:
    with pytest.raises(SymbolError):
        await session.quote("999999")
    assert len(fake.of("ka10001")) == 1


# --- tokens ----------------------------------------------------------------------------------------------


async def test_credentials_are_loaded_only_to_issue(session: KiwoomSession, loader: CredentialLoader) -> None:
    for _ in range(3):
        await session.quote("005930")
    await session.deposit()
    assert loader.calls == 1


async def test_concurrent_first_calls_issue_one_token(
    session: KiwoomSession, fake: FakeKiwoom, loader: CredentialLoader
) -> None:
    await asyncio.gather(*(session.quote("005930") for _ in range(6)))
    assert len(fake.issued) == 1 and loader.calls == 1


async def test_expired_token_refreshes_once_for_concurrent_requests(
    session: KiwoomSession, fake: FakeKiwoom
) -> None:
    await session.quote("005930")
    fake.expire_tokens()
    await asyncio.gather(*(session.quote("005930") for _ in range(5)), session.deposit())
    assert len(fake.issued) == 2


async def test_token_still_refused_after_refresh_stops(session: KiwoomSession, fake: FakeKiwoom) -> None:
    fake.script(
        "ka10001", Fault(body=TOKEN_INVALID), Fault(body=direct_error(8005, "Token이 유효하지 않습니다"))
    )
    with pytest.raises(TokenExpiredError):
        await session.quote("005930")
    assert len(fake.issued) == 2 and len(fake.of("ka10001")) == 2


async def test_http_401_also_refreshes(session: KiwoomSession, fake: FakeKiwoom) -> None:
    fake.script("kt00001", Fault(status=401, body={}))
    assert (await session.deposit()).cash == 10_000_000
    assert len(fake.issued) == 2


async def test_revoke(session: KiwoomSession, tokens: TokenManager, fake: FakeKiwoom) -> None:
    await session.quote("005930")
    await tokens.revoke()
    assert fake.revoked == [fake.issued[0]]
    await session.quote("005930")  # a later call issues a fresh token
    assert len(fake.issued) == 2


# --- query retries ---------------------------------------------------------------------------------------


async def test_queries_retry_on_retry_safe_errors(session: KiwoomSession, fake: FakeKiwoom) -> None:
    fake.script(
        "ka10001",
        Fault(status=500, raw=b"oops"),
        Fault(status=429, body={}),
        Fault(body=category_error(5, 1700, "허용된 요청 개수를 초과하였습니다. API ID=ka10001")),
    )
    assert (await session.quote("005930")).price == 70100
    assert len(fake.of("ka10001")) == 4


async def test_query_retries_are_bounded(session: KiwoomSession, fake: FakeKiwoom) -> None:
    fake.script("kt00001", *(Fault(status=502, body={}) for _ in range(10)))
    with pytest.raises(ServerError):
        await session.deposit()
    assert len(fake.of("kt00001")) == 1 + session.client.max_query_retries


async def test_query_input_error_is_not_retried(session: KiwoomSession, fake: FakeKiwoom) -> None:
    fake.script("ka10001", Fault(body=category_error(2, 1517, "입력 값 형식이 올바르지 않습니다")))
    with pytest.raises(InputError):
        await session.quote("005930")
    assert len(fake.of("ka10001")) == 1


async def test_query_page_retry_keeps_cursor(session: KiwoomSession, fake: FakeKiwoom) -> None:
    fake.script("kt00018", Fault(status=503, body={}, skip=1))
    report = await session.holdings()
    assert len(report.holdings) == 3
    sent = [(p.headers["cont-yn"], p.headers["next-key"]) for p in fake.of("kt00018")]
    assert sent == [("N", ""), ("Y", "2"), ("Y", "2")]


async def test_query_timeout_is_retried(base_url: str, fake: FakeKiwoom, loader: CredentialLoader) -> None:
    async with KiwoomClient(
        base_url, timeout=0.2, retry_base_delay=0.01, rate_per_second=100, burst=100
    ) as c:
        session = KiwoomSession(c, "alice", TokenManager(c, "alice", loader))
        fake.script("ka10001", Fault(delay=3.0, body={"return_code": 0}))
        assert (await session.quote("005930")).price == 70100
    assert len(fake.of("ka10001")) == 2
