"""Envelope -> typed error mapping, both wire shapes, and what each error says about retrying."""

from __future__ import annotations

import pytest

from autotrade.broker.errors import (
    AuthError,
    BrokerError,
    CredentialsError,
    Envelope,
    InputError,
    NotSupportedError,
    OrderRejectedError,
    RateLimitError,
    ServerError,
    SymbolError,
    TokenExpiredError,
    error_from_envelope,
    error_from_http_status,
    scrub,
    timeout_error,
)


@pytest.mark.parametrize(
    ("return_code", "return_msg", "detail"),
    [
        (3, "인증에 실패했습니다[8005:Token이 유효하지 않습니다]", 8005),
        (
            5,
            "허용된 요청 개수를 초과하였습니다[1700:허용된 요청 개수를 초과하였습니다. API ID=ka10001]",
            1700,
        ),
        (8005, "Token이 유효하지 않습니다", 8005),
        (20, "RC9000:모의투자에서는 지원하지 않는 기능", 9000),
        (1, "login failed CODE=8103", 8103),
        (2, "입력 값 오류", None),  # category only
    ],
)
def test_detail_code_is_found_in_either_shape(return_code: int, return_msg: str, detail: int | None) -> None:
    assert Envelope(return_code, return_msg).detail_code == detail


@pytest.mark.parametrize(
    ("return_code", "return_msg", "is_order", "cls", "retry_safe", "unknown"),
    [
        (3, "인증에 실패했습니다[8005:Token이 유효하지 않습니다]", False, TokenExpiredError, True, False),
        (8005, "Token이 유효하지 않습니다", True, TokenExpiredError, True, False),
        (8031, "모의투자 토큰이 아닙니다", False, TokenExpiredError, True, False),
        (3, "[8103:토큰 인증 실패]", False, TokenExpiredError, True, False),
        (3, "[8001:App Key와 Secret Key 검증에 실패했습니다]", False, CredentialsError, False, False),
        (8030, "실전/모의 appkey 불일치", False, CredentialsError, False, False),
        (3, "[8010:다른 IP에서 발급된 토큰입니다]", False, AuthError, False, False),
        (3, "인증에 실패했습니다", False, AuthError, False, False),
        (5, "[1700:허용된 요청 개수를 초과하였습니다]", True, RateLimitError, True, False),
        (5, "[1702:그룹 요청 개수 초과]", False, RateLimitError, True, False),
        (5, "요청 개수 초과", True, RateLimitError, True, False),
        (5, "[1634:배치 크기 초과]", False, InputError, False, False),
        (2, "[1511:필수 입력 값에 값이 존재하지 않습니다]", True, InputError, False, False),
        (2, "[1902:종목 정보가 없습니다]", True, SymbolError, False, False),
        (1999, "예기치 못한 에러", False, ServerError, True, False),
        (1, "[1999:예기치 못한 에러]", True, ServerError, False, True),
        (20, "RC9000:모의투자에서는 지원하지 않는 기능", False, NotSupportedError, False, False),
        (8104, "모의투자 미지원 API", False, NotSupportedError, False, False),
        (1, "[2000:주문가능금액을 초과합니다]", True, OrderRejectedError, False, False),
        (1, "[2000:주문가능금액을 초과합니다]", False, BrokerError, False, False),
    ],
)
def test_classification(
    return_code: int,
    return_msg: str,
    is_order: bool,
    cls: type[BrokerError],
    retry_safe: bool,
    unknown: bool,
) -> None:
    err = error_from_envelope(Envelope(return_code, return_msg), api_id="kt10000", is_order=is_order)
    assert type(err) is cls
    assert (err.retry_safe, err.outcome_unknown) == (retry_safe, unknown)
    assert err.code == (Envelope(return_code, return_msg).code)


def test_message_says_what_happened_and_whether_to_retry() -> None:
    err = error_from_envelope(
        Envelope(
            5, "허용된 요청 개수를 초과하였습니다[1700:허용된 요청 개수를 초과하였습니다. API ID=ka10001]"
        ),
        api_id="ka10001",
        is_order=False,
    )
    assert "ka10001" in str(err) and "1700" in str(err) and "safe to retry" in str(err)
    order = error_from_http_status(503, api_id="kt10000", is_order=True)
    assert "UNKNOWN" in str(order) and order.outcome_unknown and not order.retry_safe


@pytest.mark.parametrize(
    ("status", "cls", "retry_safe"),
    [
        (429, RateLimitError, True),
        (401, TokenExpiredError, True),
        (502, ServerError, True),
        (404, InputError, False),
    ],
)
def test_http_status_mapping_for_queries(status: int, cls: type[BrokerError], retry_safe: bool) -> None:
    err = error_from_http_status(status, api_id="ka10001", is_order=False)
    assert type(err) is cls and err.retry_safe is retry_safe and err.http_status == status


def test_429_on_an_order_is_still_safe_to_resend() -> None:
    err = error_from_http_status(429, api_id="kt10000", is_order=True)
    assert err.retry_safe and not err.outcome_unknown


def test_timeouts_are_retry_safe_for_queries_and_unknown_for_orders() -> None:
    query = timeout_error("ka10001", is_order=False, what="ReadTimeout")
    order = timeout_error("kt10001", is_order=True, what="ReadTimeout")
    assert query.retry_safe and not query.outcome_unknown
    assert not order.retry_safe and order.outcome_unknown


def test_scrub_blanks_secrets_and_bounds_length() -> None:
    text = scrub("bad token TOKEN-XYZ\n" + "x" * 500, ("TOKEN-XYZ",))
    assert "TOKEN-XYZ" not in text and len(text) <= 200 and "\n" not in text


def test_repr_shows_code_and_safety() -> None:
    err = error_from_envelope(Envelope(8005, "expired"), api_id="ka10001", is_order=False)
    assert "TokenExpiredError" in repr(err) and "code=8005" in repr(err) and "retry_safe=True" in repr(err)


async def test_no_connection_within_the_timeout_means_the_order_never_left() -> None:
    """Under load the aiohttp transport reports waiting too long for a pooled connection as ConnectTimeout;
    its cause says the request never left, so the order is safe to resend, unlike a dropped connection."""
    import aiohttp
    import httpx

    from autotrade.broker import KiwoomClient

    client = KiwoomClient("http://127.0.0.1:9", transport="aiohttp")
    try:
        waited = httpx.ConnectTimeout("no connection")
        waited.__cause__ = aiohttp.ConnectionTimeoutError("Connection timeout to host")
        dropped = httpx.ConnectTimeout("connection lost")
        dropped.__cause__ = aiohttp.ServerDisconnectedError()
        safe = client._transport_failure(waited, "kt10000", is_order=True)
        unsafe = client._transport_failure(dropped, "kt10000", is_order=True)
        assert safe.retry_safe and "never sent" in str(safe)
        assert not unsafe.retry_safe and "UNKNOWN" in str(unsafe)
    finally:
        await client.aclose()
