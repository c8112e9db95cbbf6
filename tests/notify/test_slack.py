"""Slack over real HTTP: slack-sdk's WebClient and WebhookClient against a fake Slack on loopback."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from autotrade.domain.models import Tier
from autotrade.notify import NotificationError, SlackWebApiNotifier, SlackWebhookNotifier, slack_blocks
from autotrade.notify.messages import ArmedExit, TierFill, exits_armed, tier_triggered
from tests.notify.conftest import free_port, serve

TOKEN = "xoxb-1234-5678-FakeBotTokenValue"
WEBHOOK_PATH = "/services/T0000/B0000/WebhookSecretPart"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float


@dataclass
class FakeSlack:
    """Records every request; answers from ``script`` first (FIFO), then with success."""

    received: list[Received] = field(default_factory=list)
    script: deque[Response] = field(default_factory=deque)

    async def _record(self, request: Request) -> None:
        self.received.append(
            Received(
                request.url.path, dict(request.headers), json.loads(await request.body()), time.monotonic()
            )
        )

    async def post_message(self, request: Request) -> Response:
        await self._record(request)
        if self.script:
            return self.script.popleft()
        body = self.received[-1].body
        return JSONResponse({"ok": True, "channel": body["channel"], "ts": "1764029700.000100"})

    async def webhook(self, request: Request) -> Response:
        await self._record(request)
        if self.script:
            return self.script.popleft()
        return PlainTextResponse("ok")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/chat.postMessage", self.post_message, methods=["POST"]),
                Route(WEBHOOK_PATH, self.webhook, methods=["POST"]),
            ]
        )


@pytest.fixture(scope="module")
def slack_server() -> Iterator[tuple[FakeSlack, str]]:
    fake = FakeSlack()
    with serve(fake.app()) as url:
        yield fake, url


@pytest.fixture
def slack(slack_server: tuple[FakeSlack, str]) -> tuple[FakeSlack, str]:
    fake, url = slack_server
    fake.received.clear()
    fake.script.clear()
    return fake, url


def web_notifier(url: str, token: str = TOKEN) -> SlackWebApiNotifier:
    return SlackWebApiNotifier(SecretStr(token), default_channel="#autotrade-ops", base_url=f"{url}/api/")


def _armed(at: datetime) -> Any:
    return exits_armed("u1", [ArmedExit("005930", "삼성전자", 14, 71_000, 67_500, 73_900, 76_700)], at)


def test_chat_post_message_sends_blocks_text_channel_and_bearer_token(
    slack: tuple[FakeSlack, str], at: datetime
) -> None:
    fake, url = slack
    notification = _armed(at)

    web_notifier(url).send(notification, "U0USER1")

    (req,) = fake.received
    assert req.path == "/api/chat.postMessage"
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.headers["content-type"].startswith("application/json")
    assert req.body["channel"] == "U0USER1"
    assert req.body["blocks"] == slack_blocks(notification)
    assert req.body["text"].startswith("[자동 매도 설정 완료 (1종목)]")
    assert "67,500원" in req.body["text"]
    assert req.body["unfurl_links"] is False
    header, prose, table, context = req.body["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "자동 매도 설정 완료 (1종목)", "emoji": True},
    }
    assert prose["text"]["text"] == "1종목에 손절·보존·익절 주문 감시를 시작했습니다."
    assert table["text"]["text"].startswith("```\n종목")
    assert "삼성전자(005930)" in table["text"]["text"]
    assert context["elements"][0]["text"].endswith("EXITS_ARMED · 2026-11-25 09:15 KST")


def test_default_channel_is_used_without_an_address(slack: tuple[FakeSlack, str], at: datetime) -> None:
    fake, url = slack
    web_notifier(url).send(_armed(at))
    assert fake.received[0].body["channel"] == "#autotrade-ops"


def test_facts_become_section_fields(slack: tuple[FakeSlack, str], at: datetime) -> None:
    fake, url = slack
    n = tier_triggered("u1", TierFill("005930", "삼성전자", Tier.TAKE_PROFIT, 7, 76_700, 39_900, 0), at)
    web_notifier(url).send(n, "C0CHAN")
    fields = next(b for b in fake.received[0].body["blocks"] if "fields" in b)["fields"]
    assert [f["text"] for f in fields] == [
        "*구분*\n익절",
        "*수량*\n7주",
        "*가격*\n76,700원",
        "*실현손익*\n+39,900원",
    ]


def test_rate_limited_then_success_is_retried_by_the_sdk_after_retry_after(
    slack: tuple[FakeSlack, str], at: datetime
) -> None:
    fake, url = slack
    fake.script.append(
        JSONResponse({"ok": False, "error": "ratelimited"}, status_code=429, headers={"Retry-After": "1"})
    )

    web_notifier(url).send(_armed(at), "U0USER1")

    first, second = fake.received
    assert second.at - first.at >= 1.0  # the handler waited Retry-After before the second attempt
    assert second.body == first.body


def test_webhook_posts_blocks_and_text(slack: tuple[FakeSlack, str], at: datetime) -> None:
    fake, url = slack
    n = _armed(at)
    SlackWebhookNotifier(SecretStr(url + WEBHOOK_PATH)).send(n, "ignored")
    (req,) = fake.received
    assert req.path == WEBHOOK_PATH
    assert "authorization" not in req.headers  # the URL is the credential
    assert req.body["blocks"] == slack_blocks(n)
    assert req.body["text"].startswith("[자동 매도 설정 완료")
    assert "channel" not in req.body


def test_webhook_rate_limited_then_success(slack: tuple[FakeSlack, str], at: datetime) -> None:
    fake, url = slack
    fake.script.append(PlainTextResponse("rate_limited", status_code=429, headers={"Retry-After": "1"}))
    SlackWebhookNotifier(SecretStr(url + WEBHOOK_PATH)).send(_armed(at))
    first, second = fake.received
    assert second.at - first.at >= 1.0


def test_invalid_auth_is_permanent_and_does_not_leak_the_token(
    slack: tuple[FakeSlack, str], at: datetime
) -> None:
    fake, url = slack
    fake.script.append(JSONResponse({"ok": False, "error": "invalid_auth"}))
    with pytest.raises(NotificationError) as info:
        web_notifier(url).send(_armed(at), "U0USER1")
    assert info.value.retryable is False
    assert str(info.value) == "slack: HTTP 200 invalid_auth"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_server_error_is_retryable(slack: tuple[FakeSlack, str], at: datetime) -> None:
    fake, url = slack
    fake.script.append(JSONResponse({"ok": False, "error": "internal_error"}, status_code=500))
    with pytest.raises(NotificationError) as info:
        web_notifier(url).send(_armed(at), "U0USER1")
    assert info.value.retryable is True


def test_webhook_errors_and_debug_logs_never_show_the_url(
    slack: tuple[FakeSlack, str], at: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    fake, url = slack
    fake.script.append(PlainTextResponse("no_service", status_code=404))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(NotificationError) as info:
        SlackWebhookNotifier(SecretStr(url + WEBHOOK_PATH)).send(_armed(at))
    assert info.value.retryable is False
    assert str(info.value) == "slack_webhook: HTTP 404 no_service"
    assert "Sending a request" in caplog.text  # the SDK did log the request...
    assert "WebhookSecretPart" not in caplog.text  # ...with the URL masked


def test_unreachable_slack_is_retryable_and_safe(at: datetime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    notifier = web_notifier(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(NotificationError) as info:
        notifier.send(_armed(at), "U0USER1")
    assert info.value.retryable is True
    assert TOKEN not in str(info.value)
    assert TOKEN not in caplog.text
