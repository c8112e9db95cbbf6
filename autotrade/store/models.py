"""ORM models.

The specification's five tables keep their names and columns (``user_api_keys``, ``trading_signals``,
``three_tier_strategies``, ``conditional_orders``, ``trade_records``), improved where the specification is
unsafe: integer KRW (BIGINT) instead of REAL, user and account on every trading row, foreign keys, checked
status enums, timezone-aware timestamps and unique keys that make every write idempotent. Alongside them:
users, accounts (a user may have several), scan batches, order intents, fills, the access log, security
events and notification failures.
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from autotrade.domain.exits import StrategyStatus, TierStatus
from autotrade.domain.models import (
    ApiStatus,
    ExitReason,
    Side,
    SignalStatus,
    SkipReason,
    Tier,
    TradeAction,
)
from autotrade.domain.orders import IntentStatus
from autotrade.store.types import AwareDateTime, enum_column, utcnow

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

KRW = sa.BigInteger


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, onupdate=utcnow)


class User(Timestamped, Base):
    __tablename__ = "users"

    user_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    email: Mapped[str | None] = mapped_column(sa.String(255), unique=True)
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(16), default="user")
    has_api_key: Mapped[bool] = mapped_column(default=False)
    auto_trading_enabled: Mapped[bool] = mapped_column(default=False)
    phone: Mapped[str | None] = mapped_column(sa.String(32))
    notify_channels: Mapped[str] = mapped_column(sa.String(255), default="console")
    # Bumped by a password change: every API session token issued before it carries an older value.
    session_epoch: Mapped[int] = mapped_column(default=0, server_default="0")

    accounts: Mapped[list[Account]] = relationship(back_populates="user", cascade="all, delete-orphan")


class Account(Timestamped, Base):
    __tablename__ = "accounts"

    account_no: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.user_id", ondelete="CASCADE"), index=True)
    account_name: Mapped[str | None] = mapped_column(sa.String(128))
    broker: Mapped[str] = mapped_column(sa.String(16), default="kiwoom")

    user: Mapped[User] = relationship(back_populates="accounts")


class UserApiKey(Base):
    """Specification's ``user_api_keys``; one row per user and account (multi-account)."""

    __tablename__ = "user_api_keys"
    __table_args__ = (sa.UniqueConstraint("user_id", "account_no"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.user_id", ondelete="CASCADE"), index=True)
    # Sealed with AES-GCM under the per-account data key; never plaintext.
    app_key_encrypted: Mapped[str] = mapped_column(sa.Text)
    app_secret_encrypted: Mapped[str] = mapped_column(sa.Text)
    # The data key, encrypted by the KMS key (None once crypto-shredded).
    encrypted_data_key: Mapped[str | None] = mapped_column(sa.Text)
    kms_key_id: Mapped[str] = mapped_column(sa.String(255), default="")
    key_version: Mapped[int] = mapped_column(default=1)
    account_no: Mapped[str] = mapped_column(sa.ForeignKey("accounts.account_no", ondelete="CASCADE"))
    account_name: Mapped[str | None] = mapped_column(sa.String(128))
    api_status: Mapped[ApiStatus] = mapped_column(enum_column(ApiStatus), default=ApiStatus.ACTIVE)
    registered_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
    # When the kill switch or an operator last changed the status: the security windows start there.
    status_changed_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
    daily_limit: Mapped[int] = mapped_column(KRW, default=10_000_000)
    is_auto_trading_enabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, onupdate=utcnow)


class ScanBatch(Base):
    __tablename__ = "scan_batches"
    __table_args__ = (sa.UniqueConstraint("trading_day", "content_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trading_day: Mapped[date] = mapped_column(sa.Date, index=True)
    source: Mapped[str] = mapped_column(sa.String(512))
    content_hash: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16))  # ACCEPTED / REJECTED
    row_count: Mapped[int] = mapped_column(default=0)
    report: Mapped[str] = mapped_column(sa.Text, default="")
    payload: Mapped[str] = mapped_column(sa.Text, default="")
    received_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)


class TradingSignal(Base):
    """Specification's ``trading_signals`` with account, trading day, batch and the skip reason."""

    __tablename__ = "trading_signals"
    __table_args__ = (sa.UniqueConstraint("trading_day", "user_id", "account_no", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.user_id", ondelete="CASCADE"), index=True)
    account_no: Mapped[str] = mapped_column(sa.ForeignKey("accounts.account_no", ondelete="CASCADE"))
    scan_batch_id: Mapped[int | None] = mapped_column(sa.ForeignKey("scan_batches.id"))
    trading_day: Mapped[date] = mapped_column(sa.Date)
    code: Mapped[str] = mapped_column(sa.String(6))
    name: Mapped[str] = mapped_column(sa.String(128))
    score: Mapped[float] = mapped_column(sa.Float)
    current_price: Mapped[int] = mapped_column(KRW)
    target_quantity: Mapped[int] = mapped_column(default=0)
    confidence: Mapped[float] = mapped_column(sa.Float, default=0.0)
    reasons: Mapped[str] = mapped_column(sa.Text, default="[]")  # JSON list
    status: Mapped[SignalStatus] = mapped_column(enum_column(SignalStatus), default=SignalStatus.PENDING)
    skip_reason: Mapped[SkipReason | None] = mapped_column(enum_column(SkipReason))
    skip_detail: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)


class ThreeTierStrategy(Base):
    """Specification's ``three_tier_strategies``: one armed position, its tier prices and live state."""

    __tablename__ = "three_tier_strategies"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.user_id", ondelete="CASCADE"), index=True)
    # an account's positions (planning reads the ones it closed), however many there are in all
    account_no: Mapped[str] = mapped_column(
        sa.ForeignKey("accounts.account_no", ondelete="CASCADE"), index=True
    )
    buy_intent_key: Mapped[str] = mapped_column(sa.String(255), unique=True)
    code: Mapped[str] = mapped_column(sa.String(6), index=True)
    name: Mapped[str] = mapped_column(sa.String(128))
    quantity: Mapped[int]
    entry_price: Mapped[int] = mapped_column(KRW)
    entry_date: Mapped[date] = mapped_column(sa.Date)
    stop_loss_price: Mapped[int] = mapped_column(KRW)
    preserve_price: Mapped[int] = mapped_column(KRW)
    take_profit_price: Mapped[int] = mapped_column(KRW)
    stop_loss_rate: Mapped[float] = mapped_column(sa.Float, default=5.0)
    preserve_rate: Mapped[float] = mapped_column(sa.Float, default=4.0)
    take_profit_rate: Mapped[float] = mapped_column(sa.Float, default=8.0)
    held_quantity: Mapped[int]
    preserve_target: Mapped[int]
    preserve_sold: Mapped[int] = mapped_column(default=0)
    status: Mapped[StrategyStatus] = mapped_column(
        enum_column(StrategyStatus), default=StrategyStatus.ACTIVE, index=True
    )
    armed_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, onupdate=utcnow)

    orders: Mapped[list[ConditionalOrder]] = relationship(
        back_populates="strategy", cascade="all, delete-orphan", order_by="ConditionalOrder.id"
    )


class ConditionalOrder(Base):
    """Specification's ``conditional_orders``: one row per tier of a strategy.

    ``order_no`` is the broker order of the tier's sell once it fired; with market-on-trigger exits nothing
    rests at the broker before that, so it is NULL until then (the specification's NOT NULL assumed
    resting conditional orders).
    """

    __tablename__ = "conditional_orders"
    __table_args__ = (sa.UniqueConstraint("strategy_id", "order_type"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    strategy_id: Mapped[int] = mapped_column(sa.ForeignKey("three_tier_strategies.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.user_id", ondelete="CASCADE"))
    account_no: Mapped[str] = mapped_column(sa.ForeignKey("accounts.account_no", ondelete="CASCADE"))
    order_no: Mapped[str | None] = mapped_column(sa.String(32))
    order_type: Mapped[Tier] = mapped_column(enum_column(Tier))
    trigger_price: Mapped[int] = mapped_column(KRW)
    quantity: Mapped[int]
    status: Mapped[TierStatus] = mapped_column(enum_column(TierStatus), default=TierStatus.ACTIVE)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    executed_at: Mapped[datetime | None] = mapped_column(AwareDateTime())

    strategy: Mapped[ThreeTierStrategy] = relationship(back_populates="orders")


class OrderIntentRow(Base):
    """An order decided before it is sent: the exactly-once protocol's ledger."""

    __tablename__ = "order_intents"
    # an account's intents of a day (planning, sending, reconciling), however many accounts trade that day
    __table_args__ = (sa.Index("ix_order_intents_account_no_trading_day", "account_no", "trading_day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(255), unique=True)
    trading_day: Mapped[date] = mapped_column(sa.Date, index=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.user_id", ondelete="CASCADE"), index=True)
    account_no: Mapped[str] = mapped_column(sa.ForeignKey("accounts.account_no", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(sa.String(6))
    side: Mapped[Side] = mapped_column(enum_column(Side))
    purpose: Mapped[str] = mapped_column(sa.String(64))  # BUY, or the tier and attempt of an exit
    quantity: Mapped[int]
    price: Mapped[int | None] = mapped_column(KRW)
    trade_type: Mapped[str] = mapped_column(sa.String(24))  # OrderType name (MARKET, AFTER_HOURS_CLOSE, ...)
    stop_price: Mapped[int | None] = mapped_column(KRW)  # the trigger of a STOP_LIMIT (resting stop)
    status: Mapped[IntentStatus] = mapped_column(enum_column(IntentStatus), default=IntentStatus.NEW)
    order_no: Mapped[str | None] = mapped_column(sa.String(32))
    filled_quantity: Mapped[int] = mapped_column(default=0)
    filled_amount: Mapped[int] = mapped_column(KRW, default=0)
    signal_id: Mapped[int | None] = mapped_column(sa.ForeignKey("trading_signals.id"))
    strategy_id: Mapped[int | None] = mapped_column(sa.ForeignKey("three_tier_strategies.id"))
    tier: Mapped[Tier | None] = mapped_column(enum_column(Tier))
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(sa.String(512))
    submitted_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, onupdate=utcnow)


class FillRow(Base):
    __tablename__ = "fills"
    __table_args__ = (sa.UniqueConstraint("account_no", "order_no", "fill_no"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    intent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("order_intents.id"), index=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.user_id", ondelete="CASCADE"))
    account_no: Mapped[str] = mapped_column(sa.ForeignKey("accounts.account_no", ondelete="CASCADE"))
    order_no: Mapped[str] = mapped_column(sa.String(32))
    fill_no: Mapped[str] = mapped_column(sa.String(32))
    code: Mapped[str] = mapped_column(sa.String(6))
    side: Mapped[Side] = mapped_column(enum_column(Side))
    quantity: Mapped[int]
    price: Mapped[int] = mapped_column(KRW)
    fee: Mapped[int] = mapped_column(KRW, default=0)
    tax: Mapped[int] = mapped_column(KRW, default=0)
    executed_at: Mapped[datetime] = mapped_column(AwareDateTime())


class TradeRecordRow(Base):
    """Specification's ``trade_records`` with account, costs and integer KRW."""

    __tablename__ = "trade_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    trade_id: Mapped[str] = mapped_column(sa.String(128), unique=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.user_id", ondelete="CASCADE"), index=True)
    account_no: Mapped[str] = mapped_column(sa.ForeignKey("accounts.account_no", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(sa.String(6))
    name: Mapped[str] = mapped_column(sa.String(128))
    action: Mapped[TradeAction] = mapped_column(enum_column(TradeAction))
    quantity: Mapped[int]
    price: Mapped[int] = mapped_column(KRW)
    amount: Mapped[int] = mapped_column(KRW)
    fee: Mapped[int] = mapped_column(KRW, default=0)
    tax: Mapped[int] = mapped_column(KRW, default=0)
    executed_at: Mapped[datetime] = mapped_column(AwareDateTime())
    trading_day: Mapped[date] = mapped_column(sa.Date, index=True)
    signal_score: Mapped[float | None] = mapped_column(sa.Float)
    exit_reason: Mapped[ExitReason | None] = mapped_column(enum_column(ExitReason))
    profit_loss: Mapped[int | None] = mapped_column(KRW)
    strategy_id: Mapped[int | None] = mapped_column(sa.ForeignKey("three_tier_strategies.id"))
    intent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("order_intents.id"))


class AccessLog(Base):
    """Every use of a user's broker access through the gateway, allowed or refused."""

    __tablename__ = "access_log"
    __table_args__ = (
        sa.Index("ix_access_log_account_action_at", "account_no", "action", "at"),
        sa.Index("ix_access_log_account_no_at", "account_no", "at"),  # the security rules' windows
        sa.Index(  # the refusal window reads only the refusals, however busy the key
            "ix_access_log_refused_account_no_at",
            "account_no",
            "at",
            postgresql_where=sa.text("allowed = false"),
            sqlite_where=sa.text("allowed = 0"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, index=True)
    user_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    account_no: Mapped[str | None] = mapped_column(sa.String(32))
    token_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    order_ref: Mapped[str | None] = mapped_column(sa.String(128), index=True)  # the order intent's key
    action: Mapped[str] = mapped_column(sa.String(64))
    origin: Mapped[str | None] = mapped_column(sa.String(128))
    allowed: Mapped[bool]
    reason: Mapped[str | None] = mapped_column(sa.String(255))
    amount: Mapped[int | None] = mapped_column(KRW)


class SecurityEvent(Base):
    __tablename__ = "security_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, index=True)
    user_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    account_no: Mapped[str | None] = mapped_column(sa.String(32))
    rule: Mapped[str] = mapped_column(sa.String(64))
    severity: Mapped[str] = mapped_column(sa.String(16))
    detail: Mapped[str] = mapped_column(sa.Text, default="")
    action_taken: Mapped[str] = mapped_column(sa.String(128), default="")


class NotificationFailure(Base):
    __tablename__ = "notification_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    channel: Mapped[str] = mapped_column(sa.String(32))
    audience: Mapped[str] = mapped_column(sa.String(64))
    kind: Mapped[str] = mapped_column(sa.String(32))
    error: Mapped[str] = mapped_column(sa.String(512))
    attempts: Mapped[int] = mapped_column(default=0)


class EquitySnapshot(Base):
    """End-of-day account value as the broker reported it: the equity curve of reports and drawdowns."""

    __tablename__ = "equity_snapshots"
    __table_args__ = (sa.UniqueConstraint("account_no", "trading_day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.user_id", ondelete="CASCADE"), index=True)
    account_no: Mapped[str] = mapped_column(sa.ForeignKey("accounts.account_no", ondelete="CASCADE"))
    trading_day: Mapped[date] = mapped_column(sa.Date)
    cash: Mapped[int] = mapped_column(KRW)
    holdings_value: Mapped[int] = mapped_column(KRW)
    equity: Mapped[int] = mapped_column(KRW)
    realized_pnl: Mapped[int] = mapped_column(KRW, default=0)
    unrealized_pnl: Mapped[int] = mapped_column(KRW, default=0)
    taken_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)


class RevokedToken(Base):
    """Temporary tokens revoked before their expiry; every gateway process checks this."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    revoked_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(AwareDateTime())
    reason: Mapped[str] = mapped_column(sa.String(128), default="")


class BrokerTokenCache(Base):
    """A user's broker token, sealed with the gateway's own key (never in clear), shared between processes
    so that KMS Decrypt runs at most once per user per token lifetime."""

    __tablename__ = "broker_token_cache"

    key_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    token_sealed: Mapped[str] = mapped_column(sa.Text)
    expires_at: Mapped[datetime] = mapped_column(AwareDateTime())
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, onupdate=utcnow)


class WatcherLease(Base):
    """Who runs a price watch now: the holder renews ``expires_at`` every few seconds; a scheduled run that
    finds it past takes the watch over (``autotrade.store.leases``). ``watched_until`` records that a watch
    ended normally at that moment (the close), so later runs of the same day have nothing to do."""

    __tablename__ = "watcher_leases"

    name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(255))
    acquired_at: Mapped[datetime] = mapped_column(AwareDateTime())
    expires_at: Mapped[datetime] = mapped_column(AwareDateTime())
    watched_until: Mapped[datetime | None] = mapped_column(AwareDateTime())


class UserNotice(Base):
    """One thing a user was told on a trading day (an order placed, a fill, an armed exit): a re-run or a
    Prefect retry of a flow sends a user only the items not yet here (tasks/notifications.py)."""

    __tablename__ = "user_notices"
    __table_args__ = (sa.UniqueConstraint("user_id", "trading_day", "kind", "item"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(64))
    trading_day: Mapped[date] = mapped_column(sa.Date)
    kind: Mapped[str] = mapped_column(sa.String(32))
    item: Mapped[str] = mapped_column(sa.String(255))
    told_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)


class AuthThrottle(Base):
    """The API's login and sign-up limiter state, shared by every API process (autotrade/api/limits.py):
    one row per limited key (an account's email, a client address), failures in the current window and the
    time it is blocked until. Rows past their window are deleted as the limiter goes."""

    __tablename__ = "auth_throttle"

    key: Mapped[str] = mapped_column(sa.String(300), primary_key=True)
    count: Mapped[int] = mapped_column(default=0)
    window_start: Mapped[datetime] = mapped_column(AwareDateTime(), index=True)
    blocked_until: Mapped[datetime | None] = mapped_column(AwareDateTime())


class BrokerLatency(Base):
    """The broker's response times of a trading day per TR (api-id), summed by every process that calls it
    (autotrade/ops/worker_metrics.py adds its calls every few seconds): the daily report's average broker
    response time."""

    __tablename__ = "broker_latency"

    trading_day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    api_id: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    calls: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    total_ms: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    max_ms: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class DailyBar(Base):
    """A stock's daily bar as the product saw it: the broker's quote (ka10001: the day's open, high, low, last
    price and volume) read after the close by the daily report (tasks/reports.py ``record_daily_bars``), for
    the codes it cared about that day. The monthly review backtests over these (autotrade/backtest/review.py).
    ``source`` says where the bar came from ("quote")."""

    __tablename__ = "daily_bars"
    __table_args__ = (sa.UniqueConstraint("trading_day", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trading_day: Mapped[date] = mapped_column(sa.Date)
    code: Mapped[str] = mapped_column(sa.String(6))
    open: Mapped[int] = mapped_column(KRW)
    high: Mapped[int] = mapped_column(KRW)
    low: Mapped[int] = mapped_column(KRW)
    close: Mapped[int] = mapped_column(KRW)
    volume: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    source: Mapped[str] = mapped_column(sa.String(16), default="quote")
    recorded_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
