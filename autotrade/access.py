"""How a process reaches users' broker accounts: always through the vault's gateway.

Tasks ask for an account with the actions they need; they get an adapter over a gated session opened with a
fresh temporary token, never a secret. The Kiwoom client and the gateway are built per event loop (an httpx
client belongs to the loop it was created in); the sealed broker-token cache in the database makes that cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from pydantic import SecretStr

from autotrade.broker.errors import BrokerError
from autotrade.broker.fallback import FallbackPriceFeed, FeedSwitch
from autotrade.broker.feed import PriceFeed, PriceTick, QuoteSource
from autotrade.broker.messages import Credentials, Quote
from autotrade.config import BrokerEnv, KmsProvider, Settings, broker_urls
from autotrade.domain.calendar import hours_of, is_trading_day
from autotrade.domain.krx import KST
from autotrade.secret_files import load_or_create_key, require_master_key
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

log = logging.getLogger(__name__)


def sealed_key_count(db: Database) -> int:
    """Keys sealed under the KMS (crypto-shredded ones have no data key left)."""
    import sqlalchemy as sa

    from autotrade.store.models import UserApiKey

    try:
        with db.unit_of_work() as s:
            count = s.scalar(sa.select(sa.func.count()).select_from(UserApiKey).where(
                UserApiKey.encrypted_data_key.is_not(None)))  # fmt: skip
    except sa.exc.DBAPIError:  # no schema yet: nothing is sealed
        return 0
    return int(count or 0)


def build_kms(settings: Settings) -> Kms:
    """The KMS provider of the settings. For AWS, the vault's own credentials (``kms_aws_*``, the vault
    block's AwsCredentials) when they are set; otherwise boto3's usual chain (environment, profile, role)."""
    if settings.kms_provider is KmsProvider.AWS:
        session = None
        key_id, secret = settings.kms_aws_access_key_id, settings.kms_aws_secret_access_key
        if (key_id is None) != (secret is None):
            raise ValueError("set kms_aws_access_key_id and kms_aws_secret_access_key together, or neither")
        if key_id is not None and secret is not None:
            import boto3

            session = boto3.session.Session(
                aws_access_key_id=key_id.get_secret_value(),
                aws_secret_access_key=secret.get_secret_value(),
                region_name=settings.kms_region,
            )
        return AwsKms(
            settings.kms_key_id,
            region=settings.kms_region,
            endpoint_url=settings.kms_endpoint_url,
            boto_session=session,
        )
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
        if settings.kms_provider is KmsProvider.LOCAL:
            require_master_key(settings.local_master_key_path, sealed_key_count(db))
        self.kms = build_kms(settings)
        self.keys = KeyStore(db, self.kms)
        self.tokens = TemporaryTokens(
            db, signing_key(settings), timedelta(seconds=settings.temp_token_ttl_seconds)
        )
        self._cache_key = load_or_create_key(settings.data_dir / "keys" / "gateway-cache.key")
        self._gateways: dict[int, BrokerGateway] = {}
        self.rest_url, self.ws_url = broker_urls(settings)
        self._simulator_key: Credentials | None = None

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
        token = await gw.temporary_token(ref.user_id, ref.account_no, actions, spend_cap)
        session = await gw.session(token, origin=self.settings.origin)
        return KiwoomAccount(session, clock=self.clock)

    async def price_feed(self, on_switch: Callable[[FeedSwitch], None] | None = None) -> WebSocketPrices:
        """The operator's price source: the real-time feed logged in with the operator's market-data key
        (never a user's), polling quotes with the same key while the feed is silent in the session."""
        from autotrade.broker.feed import WebSocketPriceFeed
        from autotrade.broker.session import KiwoomSession
        from autotrade.broker.tokens import TokenManager

        credentials = await self._market_data_credentials()
        client = self.gateway().client

        async def load() -> Credentials:
            return credentials

        # Its own key id: its own token and its own rate budget in the client's limiter.
        tokens = TokenManager(client, MARKET_DATA_KEY_ID, load, clock=self.clock)
        feed = WebSocketPriceFeed(self.ws_url, tokens, clock=self.clock)
        quotes = KiwoomSession(client, MARKET_DATA_KEY_ID, tokens)
        source = FallbackPriceFeed(
            feed, quotes,
            silence_seconds=self.settings.feed_silence_seconds, poll_seconds=self.settings.quote_poll_seconds,
            expect_ticks=self._trading_expected, on_switch=on_switch, clock=self.clock,
        )  # fmt: skip
        return WebSocketPrices(source, quotes)

    async def _market_data_credentials(self) -> Credentials:
        key, secret = self.settings.market_data_app_key, self.settings.market_data_app_secret
        if key is not None and secret is not None and key.get_secret_value() and secret.get_secret_value():
            return Credentials(app_key=key, app_secret=secret)
        if self.settings.broker_env is not BrokerEnv.SIMULATOR:
            raise MarketDataKeyMissing(
                "no operator market-data app key: set AUTOTRADE_MARKET_DATA_APP_KEY and "
                "AUTOTRADE_MARKET_DATA_APP_SECRET (or the broker block's market_data_app_key and "
                "market_data_app_secret); the price feed never logs in with a user's key"
            )
        if self._simulator_key is None:
            self._simulator_key = await asyncio.to_thread(simulator_market_data_key, self.rest_url)
        return self._simulator_key

    def _trading_expected(self) -> bool:
        """Trades print in the continuous session only (none in the closing auction), on trading days."""
        now = self.clock().astimezone(KST)
        if not is_trading_day(now.date()):
            return False
        hours = hours_of(now.date())
        return hours.open <= now.time() < hours.closing_auction_start

    async def aclose(self) -> None:
        gateways, self._gateways = list(self._gateways.values()), {}
        for gw in gateways:
            await gw.client.aclose()
        await self.db.aclose()  # its group commits' connections, made in this event loop


class WebSocketPrices:
    """:class:`~autotrade.runtime.PriceSource` over a price feed (Kiwoom's 0B feed, or its fallback).

    A background task drains the feed into a queue: waiting on the queue with a timeout is safe to cancel,
    while cancelling the feed's own iterator would close it.
    """

    def __init__(self, feed: PriceFeed, quotes: QuoteSource | None = None) -> None:
        self._feed = feed
        self._quotes = quotes
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

    @property
    def gaps(self) -> int:
        return self._feed.gaps

    async def day_range(self, code: str) -> tuple[int, int] | None:
        try:
            quote = await self.quote(code)
        except BrokerError as exc:
            log.warning("day range of %s unknown: %s", code, exc)
            return None
        if quote is None:
            return None
        low, high = int(quote.low), int(quote.high)
        return (low, high) if 0 < low <= high else None

    async def quote(self, code: str) -> Quote | None:
        return None if self._quotes is None else await self._quotes.quote(code)

    async def aclose(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        await self._feed.aclose()


class MarketDataKeyMissing(LookupError):
    """A real broker and no operator market-data key: the price watch cannot start."""


MARKET_DATA_KEY_ID = "market-data"
# The operator's account at the simulator, which its market-data key belongs to (a real Kiwoom app key is
# also issued to an account holder); no user's account number is ever this.
SIMULATOR_OPERATOR_ACCOUNT = "9999999999"


def simulator_market_data_key(base_url: str) -> Credentials:
    """Provision an operator market-data key at the simulator, as the demo provisions its users' keys: an
    account (the operator's, no cash) and an app key on it, through the simulator's admin API."""
    from autotrade.sim.server import Admin

    admin = Admin(base_url)
    try:
        with contextlib.suppress(RuntimeError):  # made by an earlier process
            admin.create_account(SIMULATOR_OPERATOR_ACCOUNT, "operator market data", 0)
        key = admin.create_appkey(SIMULATOR_OPERATOR_ACCOUNT)
    finally:
        admin.close()
    return Credentials(app_key=SecretStr(key["appkey"]), app_secret=SecretStr(key["secretkey"]))


def build_broker_access(
    settings: Settings,
    db: Database,
    alert: AlertSink | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
) -> GatewayAccess:
    return GatewayAccess(settings, db, alert, clock=clock)
