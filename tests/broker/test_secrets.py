"""No app key, secret or token in exception messages, reprs or log records, whatever goes wrong."""

from __future__ import annotations

import logging

import pytest

from autotrade.broker.client import KiwoomClient
from autotrade.broker.errors import BrokerError
from autotrade.broker.feed import WebSocketPriceFeed
from autotrade.broker.session import KiwoomSession
from autotrade.broker.tokens import TokenManager
from tests.broker.conftest import APP_KEY, APP_SECRET, CredentialLoader
from tests.broker.fake_kiwoom import FakeKiwoom, Fault, direct_error
from tests.broker.test_feed import eventually


def _assert_clean(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"secret leaked into: {text[:200]}"


async def test_no_secret_leaks_anywhere(
    caplog: pytest.LogCaptureFixture,
    base_url: str,
    fake: FakeKiwoom,
    session: KiwoomSession,
    tokens: TokenManager,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BrokerError] = []

    async def attempt(call: object) -> None:
        try:
            await call  # type: ignore[misc]
        except BrokerError as exc:
            errors.append(exc)

    await session.quote("005930")
    token = fake.issued[0]
    # The broker echoing the token or the key back in its message must not carry them into our errors.
    fake.script("ka10001", Fault(body=direct_error(1517, f"bad header authorization=Bearer {token}")))
    await attempt(session.quote("005930"))
    fake.script("kt10000", Fault(status=500, raw=f"<html>{token}</html>".encode()))
    await attempt(session.buy("005930", 1, 70000))
    fake.script(
        "kt10000", Fault(body=direct_error(8005, "expired")), Fault(body=direct_error(8005, "expired"))
    )
    await attempt(session.buy("005930", 1, 70000))
    fake.script("au10001", Fault(body=direct_error(8001, f"appkey {APP_KEY} secret {APP_SECRET} invalid")))
    fake.expire_tokens()
    await attempt(session.deposit())
    async with KiwoomClient(base_url, timeout=2.0) as slow:
        fake.script("kt10000", Fault(delay=3.0))  # an order, so the timeout is not retried away
        await attempt(
            KiwoomSession(slow, "alice", TokenManager(slow, "alice", CredentialLoader())).buy("005930", 1, 1)
        )
    wrong = TokenManager(session.client, "alice", CredentialLoader(APP_KEY, "WRONG-SECRET"))
    await attempt(KiwoomSession(session.client, "alice", wrong).quote("005930"))
    await attempt(session.client.revoke_token(APP_KEY, APP_SECRET, "NOT-A-TOKEN-SECRET"))

    fake.expire_tokens()  # the feed's first LOGIN is refused, logged, and retried with a new token
    ws_url = base_url.replace("http://", "ws://") + "/api/dostk/websocket"
    async with WebSocketPriceFeed(ws_url, tokens, reconnect_base_delay=0.01) as feed:
        await feed.subscribe(["005930"])
        await feed.wait_connected()
        await eventually(lambda: len(fake.ping_echoes) >= 1)
        feed_repr = repr(feed)

    assert len(errors) == 7
    secrets = [APP_KEY, APP_SECRET, "WRONG-SECRET", "NOT-A-TOKEN-SECRET", *fake.issued]
    for exc in errors:
        _assert_clean(str(exc), secrets)
        _assert_clean(repr(exc), secrets)
        assert exc.__cause__ is None or "httpx" not in type(exc.__cause__).__module__
    for record in caplog.records:
        _assert_clean(record.getMessage(), secrets)
        _assert_clean(str(record.exc_text or ""), secrets)
    assert any("token redacted" in r.getMessage() for r in caplog.records)  # frames are logged, redacted
    for obj in (session, session.client, tokens, feed_repr, loader_repr(tokens)):
        _assert_clean(repr(obj), secrets)


def loader_repr(tokens: TokenManager) -> str:
    return repr(tokens._load_credentials)
