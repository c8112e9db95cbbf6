"""KakaoTalk alimtalk adapter against a fake NHN Cloud Bizmessage provider over real HTTP.

The fake checks the request the way the provider documents it (path with the app key, X-Secret-Key
header, senderKey / templateCode / recipientList body) and answers in the provider's response shapes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from autotrade.domain.models import Tier
from autotrade.notify import KakaoAlimtalkNotifier, NotificationError, NotificationKind
from autotrade.notify.kakao import recipient_no
from autotrade.notify.messages import TierFill, security_alert, tier_triggered
from tests.notify.conftest import serve

APP_KEY = "AppKeyInPath0123"
SECRET_KEY = "SecretKeyHeaderValue987"
SENDER_KEY = "s" * 39 + "K"  # sender keys are 40 characters
TEMPLATES = {NotificationKind.TIER_TRIGGERED: "AT_TIER_01", NotificationKind.EXITS_ARMED: "AT_ARMED_01"}

REFUSED_RECIPIENT = "01000000000"
SERVER_ERROR_RECIPIENT = "01099999999"


def _header(code: int, message: str) -> dict[str, Any]:
    return {"resultCode": code, "resultMessage": message, "isSuccessful": code == 0}


@dataclass
class FakeNhnAlimtalk:
    received: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)

    async def send(self, request: Request) -> Response:
        body = await request.json()
        self.received.append((request.url.path, dict(request.headers), body))
        if request.path_params["appkey"] != APP_KEY or request.headers.get("x-secret-key") != SECRET_KEY:
            return JSONResponse({"header": _header(-1000, "Invalid appKey or secretKey")})
        if set(body) != {"senderKey", "templateCode", "recipientList"} or len(body["senderKey"]) != 40:
            return JSONResponse({"header": _header(-1001, "Invalid request body")})
        recipient = body["recipientList"][0]["recipientNo"]
        if recipient == SERVER_ERROR_RECIPIENT:
            return JSONResponse({"header": _header(-9999, "Internal error")}, status_code=500)
        code = -2001 if recipient == REFUSED_RECIPIENT else 0
        return JSONResponse(
            {
                "header": _header(0, "SUCCESS"),
                "message": {
                    "requestId": "20261125091500abcd",
                    "senderGroupingKey": None,
                    "sendResults": [
                        {
                            "recipientSeq": 1,
                            "recipientNo": recipient,
                            "resultCode": code,
                            "resultMessage": "SUCCESS" if code == 0 else "Not a KakaoTalk user",
                            "recipientGroupingKey": None,
                        }
                    ],
                },
            }
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/alimtalk/v2.3/appkeys/{appkey}/messages", self.send, methods=["POST"])]
        )


@pytest.fixture(scope="module")
def provider_server() -> Iterator[tuple[FakeNhnAlimtalk, str]]:
    fake = FakeNhnAlimtalk()
    with serve(fake.app()) as url:
        yield fake, url


@pytest.fixture
def provider(provider_server: tuple[FakeNhnAlimtalk, str]) -> tuple[FakeNhnAlimtalk, str]:
    provider_server[0].received.clear()
    return provider_server


def notifier(url: str, *, secret_key: str = SECRET_KEY) -> KakaoAlimtalkNotifier:
    return KakaoAlimtalkNotifier(
        app_key=SecretStr(APP_KEY),
        secret_key=SecretStr(secret_key),
        sender_key=SecretStr(SENDER_KEY),
        templates=TEMPLATES,
        base_url=url,
    )


def _tier(at: datetime) -> Any:
    return tier_triggered("u1", TierFill("005930", "삼성전자", Tier.PRESERVE, 7, 73_900, 20_300, 7), at)


def test_request_shape_and_success(provider: tuple[FakeNhnAlimtalk, str], at: datetime) -> None:
    fake, url = provider
    n = _tier(at)

    notifier(url).send(n, "010-1234-5678")

    ((path, headers, body),) = fake.received
    assert path == f"/alimtalk/v2.3/appkeys/{APP_KEY}/messages"
    assert headers["x-secret-key"] == SECRET_KEY
    assert headers["content-type"] == "application/json;charset=UTF-8"
    assert headers["x-nc-api-idempotency-key"] == n.id
    assert body == {
        "senderKey": SENDER_KEY,
        "templateCode": "AT_TIER_01",
        "recipientList": [
            {
                "recipientNo": "01012345678",
                "templateParameter": {
                    "stock": "삼성전자(005930)",
                    "tier": "보존",
                    "qty": "7주",
                    "price": "73,900원",
                    "pnl": "+20,300원",
                    "remaining": "잔여 7주",
                    "time": "2026-11-25 09:15 KST",
                },
            }
        ],
    }


def test_refused_recipient_is_a_permanent_failure(
    provider: tuple[FakeNhnAlimtalk, str], at: datetime
) -> None:
    _, url = provider
    with pytest.raises(NotificationError) as info:
        notifier(url).send(_tier(at), REFUSED_RECIPIENT)
    assert info.value.retryable is False
    assert str(info.value) == "kakao: HTTP 200 resultCode=-2001 Not a KakaoTalk user"


def test_refused_request_header_is_permanent_and_hides_the_keys(
    provider: tuple[FakeNhnAlimtalk, str], at: datetime
) -> None:
    _, url = provider
    with pytest.raises(NotificationError) as info:
        notifier(url, secret_key="WrongSecretValue").send(_tier(at), "01012345678")
    assert info.value.retryable is False
    assert "resultCode=-1000" in str(info.value)
    for secret in (APP_KEY, SENDER_KEY, "WrongSecretValue"):
        assert secret not in str(info.value)


def test_provider_5xx_is_retryable(provider: tuple[FakeNhnAlimtalk, str], at: datetime) -> None:
    _, url = provider
    with pytest.raises(NotificationError) as info:
        notifier(url).send(_tier(at), SERVER_ERROR_RECIPIENT)
    assert info.value.retryable is True


def test_kind_without_template_is_refused_before_any_request(
    provider: tuple[FakeNhnAlimtalk, str], at: datetime
) -> None:
    fake, url = provider
    alert = security_alert("u1", "burst", "키 비활성화", at)
    with pytest.raises(NotificationError, match="no template for SECURITY_ALERT") as info:
        notifier(url).send(alert, "01012345678")
    assert info.value.retryable is False
    assert fake.received == []


def test_a_phone_number_is_required(provider: tuple[FakeNhnAlimtalk, str], at: datetime) -> None:
    _, url = provider
    with pytest.raises(NotificationError, match="no recipient"):
        notifier(url).send(_tier(at))


def test_httpx_request_log_does_not_show_the_app_key(
    provider: tuple[FakeNhnAlimtalk, str], at: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    _, url = provider
    caplog.set_level(logging.DEBUG)
    notifier(url).send(_tier(at), "01012345678")
    assert "HTTP Request: POST" in caplog.text
    for secret in (APP_KEY, SECRET_KEY, SENDER_KEY):
        assert secret not in caplog.text


@pytest.mark.parametrize(
    ("phone", "number"),
    [("010-1234-5678", "01012345678"), ("+82 10-1234-5678", "01012345678"), ("01012345678", "01012345678")],
)
def test_recipient_number_normalisation(phone: str, number: str) -> None:
    assert recipient_no(phone) == number
