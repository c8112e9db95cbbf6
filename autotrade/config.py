"""One settings class for the whole product (env prefix ``AUTOTRADE_``, ``.env`` supported).

Defaults are the embedded mode: SQLite under the home, the simulator as broker, the local KMS provider,
the console notifier. Risk limits and exit rates default to the specification's values.

Every path the product writes lives under one absolute home, ``AUTOTRADE_HOME`` (default: the checkout's
``var/``, found from this file, never from the working directory): the database, the master key, the key
files, scans and backups default to places in it, and a relative path given for any of them is taken
under the home too. Starting from another directory finds the same files.
"""

from __future__ import annotations

import os
from datetime import time
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from autotrade.domain.krx import CostRates
from autotrade.domain.risk import RiskLimits


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class BrokerEnv(StrEnum):
    """Which Kiwoom host the client talks to."""

    PRODUCTION = "production"
    MOCK = "mock"
    SIMULATOR = "simulator"


class BuySession(StrEnum):
    """Session in which the evening buy is placed.

    ``AFTER_HOURS_CLOSE`` (default): 15:40-16:00 at today's close (trde_tp 81); fills only against
    opposing orders, so it may fill partly or not at all, but the position is known before the next open.
    ``NEXT_OPEN``: a market order queued for the next morning's opening auction (trde_tp 3).
    """

    AFTER_HOURS_CLOSE = "after_hours_close"
    NEXT_OPEN = "next_open"


class KmsProvider(StrEnum):
    LOCAL = "local"
    AWS = "aws"


class TradingRules(BaseModel):
    """The rules an account trades under: risk limits, the three-tier exit and costs. Live settings and the
    backtester's config both are these rules (plus their own options), so the two cannot drift apart."""

    # risk (KRW, integers) -- specification section 3.4
    min_ai_score: float = Field(7.0, ge=0, le=10)
    max_daily_investment: int = Field(10_000_000, gt=0)
    max_stock_count: int = Field(10, gt=0)
    max_per_stock: int = Field(1_000_000, gt=0)
    allow_rebuy_same_day: bool = True

    # three-tier exit (percent), passed to autotrade.domain.exits.ExitStrategy.arm
    stop_loss_rate: float = Field(5.0, gt=0, lt=100)
    preserve_rate: float = Field(4.0, gt=0, lt=100)
    take_profit_rate: float = Field(8.0, gt=0, lt=1000)

    # costs (percent). Kiwoom online brokerage fee 0.015% (키움증권 수수료 안내, 영웅문/REST 온라인
    # 매매); securities transaction tax on KRX sells 0.20% from 2026-01-01 (증권거래세법 시행령 개정,
    # 2025 세법개정: KOSPI 0.05% + 농어촌특별세 0.15%, KOSDAQ 0.20%).
    fee_rate: Decimal = Decimal("0.015")
    sell_tax_rate: Decimal = Decimal("0.20")

    @field_validator("fee_rate", "sell_tax_rate")
    @classmethod
    def _rate_in_range(cls, v: Decimal) -> Decimal:
        if not Decimal(0) <= v < Decimal(100):
            raise ValueError("a rate is a percentage between 0 and 100")
        return v

    def risk_limits(self, daily_limit: int) -> RiskLimits:
        """The limits :func:`autotrade.domain.risk.plan_buys` applies, with the user's own daily limit."""
        return RiskLimits(
            min_ai_score=self.min_ai_score,
            max_daily_investment=self.max_daily_investment,
            daily_limit=daily_limit,
            max_stock_count=self.max_stock_count,
            max_per_stock=self.max_per_stock,
            allow_rebuy_same_day=self.allow_rebuy_same_day,
        )

    def costs(self) -> CostRates:
        return CostRates(fee_rate=self.fee_rate, sell_tax_rate=self.sell_tax_rate)


CHECKOUT = Path(__file__).resolve().parents[1]
# where each path setting goes under the home when it is not set
_UNDER_HOME = {"data_dir": ".", "local_master_key_path": "master.key", "scan_location": "scans",
               "backup_location": "backups", "metrics_dir": "metrics"}  # fmt: skip


def _sqlite_under(home: Path, url: str) -> str:
    """A SQLite URL whose file path is relative, made absolute under ``home`` (other URLs unchanged)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url[len(prefix) :] in ("", ":memory:") or url.startswith(prefix + "/"):
        return url
    return prefix + str(home / url[len(prefix) :])


class Settings(BaseSettings, TradingRules):
    # Errors name the field, never its value: a database URL holds a password, a webhook URL is a secret.
    # Infinite or NaN numbers are refused (an infinite timeout is a hang, not a setting).
    model_config = SettingsConfigDict(
        env_prefix="AUTOTRADE_", env_file=".env", env_file_encoding="utf-8", extra="ignore",
        hide_input_in_errors=True, allow_inf_nan=False,
    )  # fmt: skip

    # storage: the home of every file the product writes (AUTOTRADE_HOME; see the module's docstring)
    home: Path = CHECKOUT / "var"
    database_url: str = "sqlite:///var/autotrade.db"
    # connections per process (a server database; SQLite writes one transaction at a time)
    database_pool_size: int = Field(10, ge=1, le=200)
    # PostgreSQL: the order path's statements in group commits over asyncpg (autotrade/store/batch.py); off
    # for a connection pooler that cannot keep prepared statements (PgBouncer in transaction mode)
    database_batching: bool = True
    data_dir: Path = Path("var")
    # backups (autotrade/ops/backup.py): a folder or s3://bucket/prefix, never where the master key lives
    backup_location: str = "var/backups"
    backup_keep: int = Field(14, ge=1, description="the newest backups kept at the location")
    backup_s3_endpoint_url: str | None = None  # an S3-compatible store; None: AWS
    # where every process that trades writes its Prometheus metrics (multiprocess mode), read by the API's
    # /metrics (autotrade/ops/worker_metrics.py); one folder per machine
    metrics_dir: Path = Path("metrics")
    # log lines: "text" (Prefect's and Python's usual format) or "json" (one object a line, with run ids)
    log_format: str = Field("text", pattern="^(text|json)$")

    # the daily limit of a key registered without one (the rules' other risk fields: TradingRules)
    default_daily_limit: int = Field(10_000_000, gt=0)

    buy_session: BuySession = BuySession.AFTER_HOURS_CLOSE

    # scan intake: a file, a folder (newest scan of the day), or s3://bucket/prefix
    scan_location: str = "var/scans"
    scan_max_age_minutes: int = Field(180, gt=0)
    # the evening run waits this long past its start for the day's scan (a missing file, one still being
    # written, a transient S3 error are retried every scan_poll_seconds), then fails saying what it saw
    scan_wait_minutes: float = Field(15.0, ge=0)
    scan_poll_seconds: float = Field(10.0, gt=0)
    # daily bars (a file or a folder, any layout of autotrade/backtest/sources.py) that the monthly review
    # backtests the month's scans over instead of the bars the product recorded (daily_bars, written by the
    # daily report after each close); unset (the default): the database's; a relative path is taken under
    # the home
    review_bars_location: Path | None = None

    # orchestration
    batch_size: int = Field(500, gt=0, description="accounts per Prefect task run")
    account_concurrency: int = Field(200, gt=0, description="accounts worked on at once in a batch")
    # The evening buys of many users are CPU-bound in one process: the accounts are shared out among worker
    # processes (a server database only). "auto": one per core the process may use, once the evening has
    # AUTO_ACCOUNTS_PER_PROCESS accounts for each (flows/fanout.py: a process's start-up is not worth
    # fewer); a number: that many at most, however small the evening.
    worker_processes: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = "auto"
    # Where the evening places its buys: "in-process" (the run's own process and its worker processes) or
    # "deployment": one child run of the place-buys deployment per share of evening_fanout_share_size
    # accounts, taken by any worker of the work pool (flows/fanout.py); a child whose share lease is not
    # renewed for evening_fanout_lease_seconds is taken as crashed and its share run again, at most
    # evening_fanout_attempts runs in all (a server database only).
    evening_fanout: str = Field("in-process", pattern="^(in-process|deployment)$")
    evening_fanout_deployment: str = "place_buys/place-buys"
    evening_fanout_share_size: int = Field(1000, gt=0)
    evening_fanout_attempts: int = Field(3, ge=1, le=10)
    evening_fanout_lease_seconds: float = Field(30.0, ge=1)
    evening_fanout_poll_seconds: float = Field(2.0, gt=0)
    # A share that no worker has started this long after the evening first submitted it (a pool with no
    # worker, or too few) is cancelled and its accounts fail, loudly, rather than the evening waiting on.
    evening_fanout_start_minutes: float = Field(10.0, gt=0)
    reconcile_every_minutes: float = Field(5.0, gt=0)

    # A stop-limit sell resting at the broker for every position (trde_tp 28): the last line of defence when
    # the price watch is down. Its limit is this many KRX ticks below the trigger, so it still fills when
    # the price gaps a little through the stop (0: limit = trigger).
    resting_stop: bool = False
    resting_stop_limit_ticks: int = Field(5, ge=0, le=50)

    # broker
    broker_env: BrokerEnv = BrokerEnv.SIMULATOR
    broker_base_url: str = "http://127.0.0.1:8765"
    broker_rate_per_second: float = Field(1.0, gt=0)
    broker_burst: int = Field(2, ge=1)
    broker_timeout_seconds: float = Field(10.0, gt=0)
    # An order whose call failed without an answer is only resent once it has not appeared at the broker for
    # this long (keep it well above the timeout: a timed-out request may still be on its way).
    order_settle_seconds: float = Field(30.0, gt=0)
    broker_ws_url: str | None = None  # default: derived from broker_base_url (Kiwoom: port 10000)

    # the price watch: the operator's own market-data app key (never a user's) opens the real-time feed and
    # polls quotes when the feed goes silent; a lease in the database lets a scheduled run take over a watch
    # whose process died (see the README's operator section)
    market_data_app_key: SecretStr | None = None
    market_data_app_secret: SecretStr | None = None
    feed_silence_seconds: float = Field(30.0, gt=0, description="no tick this long in the session: poll")
    quote_poll_seconds: float = Field(1.0, gt=0, description="pause between rounds of fallback quotes")
    watcher_lease_seconds: float = Field(20.0, gt=0, description="a watcher silent this long is replaced")
    watcher_renew_seconds: float = Field(5.0, gt=0)

    # vault
    kms_provider: KmsProvider = KmsProvider.LOCAL
    kms_key_id: str = "alias/autotrade"
    kms_region: str = "ap-northeast-2"
    kms_endpoint_url: str | None = None
    # AWS credentials for KMS (the vault block's AwsCredentials); unset: boto3's usual chain
    kms_aws_access_key_id: SecretStr | None = None
    kms_aws_secret_access_key: SecretStr | None = None
    local_master_key_path: Path = Path("var/master.key")
    jwt_signing_key: SecretStr = SecretStr("")
    # the API: proxies whose X-Forwarded-For is believed (comma-separated addresses or networks; empty: none,
    # the peer's own address is the client's), and whether /docs and /redoc are served
    api_trusted_proxies: str = ""
    api_docs: bool = True
    # Measured on the broker's clock. Five minutes live; the demo compresses a trading day into seconds of
    # virtual time, so its tokens need hours of that time to outlive one reconciliation.
    temp_token_ttl_seconds: int = Field(300, gt=0, le=8 * 3600)
    origin: str = "prefect"  # how this process identifies itself to the gateway's origin rule
    # The gateway's security rules (autotrade/vault/anomaly.py says each rule's grade and why). Buys only
    # between these times KST, on trading days; a burst or repeated refusals of one account, counted over
    # every process, disable its key (it keeps selling the product's positions).
    anomaly_buy_hours_from: time = time(7, 30)
    anomaly_buy_hours_until: time = time(18, 30)
    anomaly_trading_days_only: bool = True
    anomaly_burst_requests: int = Field(120, gt=0)
    anomaly_burst_window_seconds: float = Field(10.0, gt=0)
    anomaly_failed_checks: int = Field(5, gt=0)
    anomaly_failed_window_seconds: float = Field(300.0, gt=0)
    anomaly_allowed_origins: str = "prefect,api,demo,test,bench"  # comma-separated

    # notifications
    notifier: str = "console"
    slack_token: SecretStr | None = None
    slack_webhook_url: SecretStr | None = None
    slack_operator_channel: str = "#autotrade-ops"
    slack_base_url: str | None = None  # the Slack Web API's base (None: https://slack.com/api)
    # AWS SNS (a topic ARN for the operator; users' SMS go to their phone). Credentials: these, or boto3's
    # usual chain (environment, profile, instance role) when they are unset.
    sns_topic_arn: str | None = None
    sns_region: str = "ap-northeast-2"
    sns_endpoint_url: str | None = None
    sns_aws_access_key_id: SecretStr | None = None
    sns_aws_secret_access_key: SecretStr | None = None
    # KakaoTalk alimtalk (NHN Cloud): built when all three keys are set
    kakao_base_url: str | None = None
    kakao_app_key: SecretStr | None = None
    kakao_secret_key: SecretStr | None = None
    kakao_sender_key: SecretStr | None = None
    # the approved alimtalk template code of each notification kind (JSON: {"EXITS_ARMED": "AT_ARMED_01"})
    kakao_templates: dict[str, str] = Field(default_factory=dict)
    operator_phone: str | None = None  # the operator's KakaoTalk number when "kakao" is in ``notifier``
    # Delivery runs on a worker thread behind a bounded queue, never on the loop that sends sells: a full
    # queue drops the notice (recorded in notification_failures, channel "queue"); a flow waits at most
    # notify_flush_timeout_seconds at its end for the queue to drain. Each channel request times out after
    # notify_timeout_seconds; a Slack 429 asking for more than notify_max_retry_after_seconds is not
    # waited out.
    notify_queue_size: int = Field(1000, ge=1)
    notify_flush_timeout_seconds: float = Field(10.0, ge=0)
    notify_timeout_seconds: int = Field(10, gt=0)
    notify_max_retry_after_seconds: float = Field(10.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _paths_under_home(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        raw_home = data.get("home")
        home = Path(str(raw_home)).expanduser() if raw_home not in (None, "") else CHECKOUT / "var"
        home = (home if home.is_absolute() else CHECKOUT / home).resolve()
        data = {**data, "home": home}
        for name, default in _UNDER_HOME.items():
            value = data.get(name)
            if value in (None, ""):
                value = home / default if name != "data_dir" else home
            elif "://" not in str(value) and not Path(str(value)).expanduser().is_absolute():
                value = home / str(value)
            data[name] = str(value) if name in ("scan_location", "backup_location") else value
        url = data.get("database_url")
        data["database_url"] = _sqlite_under(home, str(url)) if url else f"sqlite:///{home / 'autotrade.db'}"
        return data

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str) -> str:
        from sqlalchemy.engine import make_url

        try:
            make_url(v)
        except Exception:  # the parser's message may quote the URL, password included
            raise ValueError("not a SQLAlchemy URL (dialect+driver://user:password@host/db)") from None
        return v

    @field_validator("broker_base_url", "kms_endpoint_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not _is_url(v, ("http", "https")):
            raise ValueError("not an http(s) URL with a host")
        return v

    @field_validator("broker_ws_url")
    @classmethod
    def _ws_url(cls, v: str | None) -> str | None:
        if v is not None and not _is_url(v, ("ws", "wss")):
            raise ValueError("not a ws(s) URL with a host")
        return v

    @field_validator("slack_webhook_url")
    @classmethod
    def _webhook_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not _is_url(v.get_secret_value(), ("https",)):
            raise ValueError("not an https URL with a host")
        return v

    @field_validator("jwt_signing_key")
    @classmethod
    def _signing_key(cls, v: SecretStr) -> SecretStr:
        # HS256 with a key shorter than its 256-bit hash can be brute-forced (RFC 7518, section 3.2).
        if v.get_secret_value() and len(v.get_secret_value().encode()) < 32:
            raise ValueError("a signing key needs at least 32 bytes (leave it empty to use a generated key)")
        return v

    @field_validator("worker_processes")
    @classmethod
    def _processes_need_a_server(cls, v: int | str, info: ValidationInfo) -> int | str:
        url = info.data.get("database_url")
        if isinstance(v, int) and v > 1 and url is not None and url.startswith("sqlite"):
            raise ValueError("more than one worker process needs a server database (PostgreSQL), not SQLite")
        return v

    @field_validator("evening_fanout")
    @classmethod
    def _fanout_needs_a_server(cls, v: str, info: ValidationInfo) -> str:
        url = info.data.get("database_url")
        if v == "deployment" and url is not None and url.startswith("sqlite"):
            raise ValueError("the evening's fan-out over the work pool needs a server database (PostgreSQL)")
        return v

    @field_validator("take_profit_rate")
    @classmethod
    def _tiers_in_order(cls, v: float, info: ValidationInfo) -> float:
        preserve = info.data.get("preserve_rate")  # absent when it failed its own checks
        if preserve is not None and preserve >= v:
            raise ValueError("must be above preserve_rate (the preserve tier fires first)")
        return v


def _is_url(value: str, schemes: tuple[str, ...]) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in schemes and bool(parts.hostname) and not any(c.isspace() for c in value)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


KIWOOM_HOSTS = {
    BrokerEnv.PRODUCTION: ("https://api.kiwoom.com", "wss://api.kiwoom.com:10000/api/dostk/websocket"),
    BrokerEnv.MOCK: ("https://mockapi.kiwoom.com", "wss://mockapi.kiwoom.com:10000/api/dostk/websocket"),
}


def broker_urls(settings: Settings) -> tuple[str, str]:
    """(REST base URL, WebSocket URL) for the configured broker environment."""
    if settings.broker_env in KIWOOM_HOSTS:
        rest, ws = KIWOOM_HOSTS[settings.broker_env]
        return rest, settings.broker_ws_url or ws
    base = settings.broker_base_url.rstrip("/")
    ws = settings.broker_ws_url or base.replace("https://", "wss://").replace("http://", "ws://")
    return base, ws if settings.broker_ws_url else ws + "/api/dostk/websocket"
