"""Fixtures: the fake Kiwoom server over real HTTP on a free loopback port, a client, a session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from autotrade.broker.client import KiwoomClient
from autotrade.broker.messages import Credentials
from autotrade.broker.session import KiwoomSession
from autotrade.broker.tokens import TokenManager
from tests.broker.fake_kiwoom import FakeKiwoom, serve

APP_KEY = "APPKEY-ALICE"
APP_SECRET = "SECRET-ALICE"


class CredentialLoader:
    """Stands in for the vault: counts how often the user's keys had to be decrypted."""

    def __init__(self, app_key: str = APP_KEY, app_secret: str = APP_SECRET) -> None:
        self.calls = 0
        self.credentials = Credentials(app_key=SecretStr(app_key), app_secret=SecretStr(app_secret))

    async def __call__(self) -> Credentials:
        self.calls += 1
        return self.credentials


@pytest.fixture
def fake() -> FakeKiwoom:
    return FakeKiwoom()


@pytest.fixture
async def base_url(fake: FakeKiwoom) -> AsyncIterator[str]:
    async with serve(fake.app()) as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[KiwoomClient]:
    """A client with a generous budget and short backoff so functional tests run fast."""
    async with KiwoomClient(
        base_url, rate_per_second=100, burst=100, retry_base_delay=0.01, retry_max_delay=0.05, timeout=2.0
    ) as c:
        yield c


@pytest.fixture
def loader() -> CredentialLoader:
    return CredentialLoader()


@pytest.fixture
def tokens(client: KiwoomClient, loader: CredentialLoader) -> TokenManager:
    return TokenManager(client, "alice", loader)


@pytest.fixture
def session(client: KiwoomClient, tokens: TokenManager) -> KiwoomSession:
    return KiwoomSession(client, "alice", tokens)
