"""How a process reaches users' broker accounts: always through the vault's gateway.

Tasks ask for an account with the actions they need; they get an adapter over a gated session opened with a
fresh temporary token, never a secret. The Kiwoom client and the gateway are built per event loop (an httpx
client belongs to the loop it was created in); the sealed broker-token cache in the database makes that cheap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from autotrade.broker.feed import PriceFeed, PriceTick
from autotrade.config import KmsProvider, Settings, broker_urls
from autotrade.domain.krx import KST
from autotrade.secret_files import load_or_create_key
from autotrade.store.db import Database
from autotrade.trading.buys import AccountRef
from autotrade.trading.kiwoom_port import KiwoomAccount
from autotrade.trading.ports import AccountBroker
from autotrade.vault.anomaly import AlertSink, AnomalyDetector, AnomalySettings
from autotrade.vault.gateway import BrokerGateway
from autotrade.vault.keys import KeyStore
from autotrade.vault.kms import AwsKms, LocalKms
from autotrade.vault.kms import KmsProvider as Kms
from autotrade.vault.tokens import TemporaryTokens


def build_kms(settings: Settings) -> Kms:
    if settings.kms_provider is KmsProvider.AWS:
        return AwsKms(settings.kms_key_id, region=settings.kms_region, endpoint_url=settings.kms_endpoint_url)
    return LocalKms(settings.local_master_key_path)


def signing_key(settings: Settings) -> bytes:
    configured = settings.jwt_signing_key.get_secret_value()
    if configured:
        return configured.encode()
    return load_or_create_key(settings.data_dir / "keys" / "temporary-token.key")


class GatewayAccess:
    """:class:`~autotrade.runtime.BrokerAccess` through the vault gateway."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        alert: AlertSink | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.alert = alert
        # The broker's clock: wall time live; the simulator's virtual time in the demo and the tests.
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(KST))
        self.kms = build_kms(settings)
        self.keys = KeyStore(db, self.kms)
        self.tokens = TemporaryTokens(
            db, signing_key(settings), timedelta(seconds=settings.temp_token_ttl_seconds)
        )
        self._cache_key = load_or_create_key(settings.data_dir / "keys" / "gateway-cache.key")
        self._gateways: dict[int, BrokerGateway] = {}
        self.rest_url, self.ws_url = broker_urls(settings)

    def gateway(self) -> BrokerGateway:
        loop = id(asyncio.get_running_loop())
        gw = self._gateways.get(loop)
        if gw is None:
            from autotrade.broker.client import KiwoomClient

            client = KiwoomClient(
                self.rest_url, timeout=self.settings.broker_timeout_seconds,
                rate_per_second=self.settings.broker_rate_per_second, burst=self.settings.broker_burst,
            )  # fmt: skip
            gw = BrokerGateway(
                self.db, self.keys, client, self.tokens, cache_key=self._cache_key,
                detector=AnomalyDetector(AnomalySettings.of(self.settings)), alert=self.alert,
                clock=self.clock,
            )  # fmt: skip
            self._gateways[loop] = gw
        return gw

    async def for_account(
        self, ref: AccountRef, actions: frozenset[str], spend_cap: int | None = None
    ) -> AccountBroker:
        gw = self.gateway()
        token = await self.db.run(gw.get_temporary_token, ref.user_id, ref.account_no, actions, spend_cap)
        session = await gw.session(token, origin=self.settings.origin)
        return KiwoomAccount(session, clock=self.clock)

    async def price_feed(self) -> WebSocketPrices:
        gw = self.gateway()
        refs = _first_active(self.db)
        if refs is None:
            raise LookupError("no active account to open the price feed with")
        # The feed logs in with that user's broker token: the gateway checks and logs it like any request.
        token = gw.get_temporary_token(*refs, frozenset({"account:read"}))
        await gw.session(token, origin=self.settings.origin)
        from autotrade.broker.feed import WebSocketPriceFeed

        feed = WebSocketPriceFeed(self.ws_url, gw.provider(*refs), clock=self.clock)
        return WebSocketPrices(feed)

    async def aclose(self) -> None:
        gateways, self._gateways = list(self._gateways.values()), {}
        for gw in gateways:
            await gw.client.aclose()


class WebSocketPrices:
    """:class:`~autotrade.runtime.PriceSource` over Kiwoom's real-time 0B feed.

    A background task drains the feed into a queue: waiting on the queue with a timeout is safe to cancel,
    while cancelling the feed's own iterator would close it.
    """

    def __init__(self, feed: PriceFeed) -> None:
        self._feed = feed
        self._queue: asyncio.Queue[PriceTick] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None

    async def subscribe(self, codes: Sequence[str]) -> None:
        if self._pump is None:
            self._pump = asyncio.create_task(self._drain())
        if codes:
            await self._feed.subscribe(list(codes))

    async def _drain(self) -> None:
        async for tick in self._feed.ticks():
            self._queue.put_nowait(tick)

    async def next_tick(self, wait_seconds: float) -> tuple[str, int, datetime] | None:
        try:
            tick = await asyncio.wait_for(self._queue.get(), wait_seconds)
        except TimeoutError:
            return None
        return tick.code, tick.price, tick.at.astimezone(KST)

    async def aclose(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        await self._feed.aclose()


def _first_active(db: Database) -> tuple[str, str] | None:
    import sqlalchemy as sa

    from autotrade.domain.models import ApiStatus
    from autotrade.store.models import UserApiKey

    with db.unit_of_work() as s:
        row = s.execute(
            sa.select(UserApiKey.user_id, UserApiKey.account_no)
            .where(UserApiKey.api_status == ApiStatus.ACTIVE)
            .order_by(UserApiKey.id)
            .limit(1)
        ).first()
    return (row[0], row[1]) if row else None


def build_broker_access(
    settings: Settings,
    db: Database,
    alert: AlertSink | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
) -> GatewayAccess:
    return GatewayAccess(settings, db, alert, clock=clock)
