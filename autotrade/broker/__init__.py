"""Async Kiwoom REST client: typed messages and errors, token manager, per-key rate limiter, price feeds.

One :class:`KiwoomClient` per process; one :class:`KiwoomSession` per user's app key on top of it. See
``PROTOCOL.md`` beside this file for the protocol assumptions.
"""

from autotrade.broker.client import KiwoomClient
from autotrade.broker.errors import (
    AuthError,
    BrokerConnectionError,
    BrokerError,
    BrokerTimeoutError,
    CredentialsError,
    InputError,
    NotSupportedError,
    OrderRejectedError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    SymbolError,
    TokenExpiredError,
)
from autotrade.broker.feed import (
    OrderExecution,
    PollingPriceFeed,
    PriceFeed,
    PriceTick,
    WebSocketPriceFeed,
)
from autotrade.broker.messages import (
    Credentials,
    Deposit,
    Exchange,
    FilledOrder,
    Holding,
    HoldingsReport,
    IssuedToken,
    OrderAck,
    Quote,
    Side,
    TradeType,
    UnfilledOrder,
)
from autotrade.broker.ratelimit import Limit, RateLimiter
from autotrade.broker.session import KiwoomSession
from autotrade.broker.tokens import TokenManager, TokenProvider

__all__ = [
    "AuthError",
    "BrokerConnectionError",
    "BrokerError",
    "BrokerTimeoutError",
    "Credentials",
    "CredentialsError",
    "Deposit",
    "Exchange",
    "FilledOrder",
    "Holding",
    "HoldingsReport",
    "InputError",
    "IssuedToken",
    "KiwoomClient",
    "KiwoomSession",
    "Limit",
    "NotSupportedError",
    "OrderAck",
    "OrderExecution",
    "OrderRejectedError",
    "PollingPriceFeed",
    "PriceFeed",
    "PriceTick",
    "Quote",
    "RateLimitError",
    "RateLimiter",
    "ResponseFormatError",
    "ServerError",
    "Side",
    "SymbolError",
    "TokenExpiredError",
    "TokenManager",
    "TokenProvider",
    "TradeType",
    "UnfilledOrder",
    "WebSocketPriceFeed",
]
