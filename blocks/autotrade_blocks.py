"""Prefect blocks: where operators configure the product in the Prefect UI.

The integration packages' blocks are used where they fit: ``SqlAlchemyConnector`` (prefect-sqlalchemy) for
the database, ``AwsCredentials`` (prefect-aws) for KMS and SNS, ``SlackCredentials`` / ``SlackWebhook``
(prefect-slack) for Slack. Secrets are ``SecretStr``. :func:`settings_from_blocks` overlays whatever blocks
exist on the environment settings, so the embedded mode works with no block at all.
"""

from __future__ import annotations

from datetime import time
from typing import Any

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from prefect_slack import SlackCredentials, SlackWebhook
from prefect_sqlalchemy import SqlAlchemyConnector
from pydantic import Field, SecretStr

from autotrade.config import Settings, get_settings

DATABASE_BLOCK = "autotrade-database"
BROKER_BLOCK = "autotrade-broker"
VAULT_BLOCK = "autotrade-vault"
NOTIFIER_BLOCK = "autotrade-notifiers"


class KiwoomBroker(Block):
    """The Kiwoom REST endpoint and the client's limits."""

    _block_type_name = "Autotrade Kiwoom Broker"
    env: str = Field("simulator", description="simulator, mock (mockapi.kiwoom.com) or production")
    base_url: str = Field("http://127.0.0.1:8765", description="REST base URL")
    rate_per_second: float = Field(1.0, gt=0, description="requests per second per app key and API")
    burst: int = Field(2, ge=1)
    # The operator's own app key for the price feed and its fallback quotes (never a user's key).
    market_data_app_key: SecretStr | None = Field(None, description="operator app key for the price feed")
    market_data_app_secret: SecretStr | None = None


class CredentialVault(Block):
    """KMS used for envelope encryption of users' broker keys, and the temporary-token signing key."""

    _block_type_name = "Autotrade Credential Vault"
    kms_provider: str = Field("local", description="local or aws")
    kms_key_id: str = "alias/autotrade"
    aws_credentials: AwsCredentials | None = None
    kms_endpoint_url: str | None = None
    jwt_signing_key: SecretStr | None = None
    # the gateway's security rules (Settings.anomaly_*; None keeps the setting)
    anomaly_buy_hours_from: str | None = Field(None, description="HH:MM KST; buys only from then")
    anomaly_buy_hours_until: str | None = Field(None, description="HH:MM KST; buys only until then")
    anomaly_trading_days_only: bool | None = None
    anomaly_burst_requests: int | None = Field(None, gt=0, description="requests in the burst window")
    anomaly_burst_window_seconds: float | None = Field(None, gt=0)
    anomaly_failed_checks: int | None = Field(None, gt=0, description="refusals in the refusal window")
    anomaly_failed_window_seconds: float | None = Field(None, gt=0)
    anomaly_allowed_origins: str | None = Field(None, description="comma-separated origins")


class Notifiers(Block):
    """Where notifications go: Slack (Web API or webhook), SNS, KakaoTalk, console."""

    _block_type_name = "Autotrade Notifiers"
    channels: list[str] = Field(default_factory=lambda: ["console"])
    slack_credentials: SlackCredentials | None = None
    slack_webhook: SlackWebhook | None = None
    slack_operator_channel: str = "#autotrade-ops"
    sns_topic_arn: str | None = None
    sns_endpoint_url: str | None = None
    aws_credentials: AwsCredentials | None = None
    operator_phone: str | None = Field(None, description="the operator's KakaoTalk number (010-XXXX-XXXX)")
    kakao_base_url: str | None = None
    kakao_app_key: SecretStr | None = None
    kakao_secret_key: SecretStr | None = None
    kakao_sender_key: SecretStr | None = None
    kakao_templates: dict[str, str] = Field(default_factory=dict, description="notification kind: template")


ANOMALY_FIELDS = tuple(n for n in CredentialVault.model_fields if n.startswith("anomaly_"))

NOTIFIER_FIELDS = (
    "sns_topic_arn", "sns_endpoint_url", "kakao_base_url", "kakao_app_key", "kakao_secret_key",
    "kakao_sender_key", "operator_phone",
)  # fmt: skip

BLOCK_TYPES: tuple[type[Block], ...] = (KiwoomBroker, CredentialVault, Notifiers, SqlAlchemyConnector)


def register_block_types() -> None:
    for block_type in BLOCK_TYPES:
        block_type.register_type_and_schema(_sync=True)  # type: ignore[call-arg]


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def _aws(key_id: SecretStr | None, secret: SecretStr | None, region: str) -> AwsCredentials | None:
    if key_id is None or secret is None:
        return None
    return AwsCredentials(
        aws_access_key_id=key_id.get_secret_value(), aws_secret_access_key=secret, region_name=region
    )


def blocks_from_settings(s: Settings) -> dict[str, Block]:
    """The four blocks that hold ``s``: what ``autotrade blocks save-defaults`` writes."""
    slack = SlackCredentials(token=s.slack_token) if s.slack_token is not None else None
    webhook = SlackWebhook(url=s.slack_webhook_url) if s.slack_webhook_url is not None else None
    return {
        DATABASE_BLOCK: SqlAlchemyConnector(connection_info=s.database_url),
        BROKER_BLOCK: KiwoomBroker(
            env=s.broker_env.value, base_url=s.broker_base_url, rate_per_second=s.broker_rate_per_second,
            burst=s.broker_burst, market_data_app_key=s.market_data_app_key,
            market_data_app_secret=s.market_data_app_secret,
        ),
        VAULT_BLOCK: CredentialVault(
            kms_provider=s.kms_provider.value, kms_key_id=s.kms_key_id, kms_endpoint_url=s.kms_endpoint_url,
            aws_credentials=_aws(s.kms_aws_access_key_id, s.kms_aws_secret_access_key, s.kms_region),
            jwt_signing_key=s.jwt_signing_key if s.jwt_signing_key.get_secret_value() else None,
            **{n: getattr(s, n).strftime("%H:%M") if n.startswith("anomaly_buy_hours") else getattr(s, n)
               for n in ANOMALY_FIELDS},
        ),
        NOTIFIER_BLOCK: Notifiers(
            channels=[c for c in s.notifier.split(",") if c], slack_credentials=slack, slack_webhook=webhook,
            slack_operator_channel=s.slack_operator_channel, sns_topic_arn=s.sns_topic_arn,
            sns_endpoint_url=s.sns_endpoint_url,
            aws_credentials=_aws(s.sns_aws_access_key_id, s.sns_aws_secret_access_key, s.sns_region),
            kakao_base_url=s.kakao_base_url, kakao_app_key=s.kakao_app_key,
            kakao_secret_key=s.kakao_secret_key, kakao_sender_key=s.kakao_sender_key,
            kakao_templates=dict(s.kakao_templates), operator_phone=s.operator_phone,
        ),
    }  # fmt: skip


def save_embedded_defaults(settings: Settings | None = None, overwrite: bool = False) -> list[str]:
    """Create the blocks from the settings (the environment's by default); returns the names saved. An
    existing block is kept unless ``overwrite``."""
    saved = []
    for name, block in blocks_from_settings(settings or get_settings()).items():
        if not overwrite and _load(type(block), name) is not None:
            continue
        block.save(name, overwrite=overwrite, _sync=True)  # type: ignore[call-arg]
        saved.append(name)
    return saved


def _load(block_type: type[Block], name: str) -> Any:
    try:
        return block_type.load(name, _sync=True)  # type: ignore[call-arg]
    except ValueError:  # no such block document
        return None


def _database_url(db: SqlAlchemyConnector) -> str:
    info = db.connection_info
    if isinstance(info, str):
        return info
    create_url = getattr(info, "create_url", None)
    if create_url is not None:  # ConnectionComponents
        return str(create_url().render_as_string(hide_password=False))
    return str(info)


def _aws_updates(creds: AwsCredentials | None, prefix: str) -> dict[str, Any]:
    if creds is None:
        return {}
    out: dict[str, Any] = {}
    if creds.aws_access_key_id and creds.aws_secret_access_key is not None:
        out[f"{prefix}_aws_access_key_id"] = SecretStr(creds.aws_access_key_id)
        out[f"{prefix}_aws_secret_access_key"] = creds.aws_secret_access_key
    if creds.region_name:
        out[f"{prefix}_region"] = creds.region_name
    return out


def settings_from_blocks(base: Settings | None = None) -> Settings:
    """The environment settings with every field that an existing block sets replaced by the block's value.
    Four reads of the Prefect API (one per block); the result is validated as the environment's is."""
    s = base or get_settings()
    updates: dict[str, Any] = {}
    db = _load(SqlAlchemyConnector, DATABASE_BLOCK)
    if db is not None:
        updates["database_url"] = _database_url(db)
    broker = _load(KiwoomBroker, BROKER_BLOCK)
    if broker is not None:
        updates.update(
            broker_env=broker.env, broker_base_url=broker.base_url,
            broker_rate_per_second=broker.rate_per_second, broker_burst=broker.burst,
        )  # fmt: skip
        if broker.market_data_app_key is not None and broker.market_data_app_secret is not None:
            updates.update(
                market_data_app_key=broker.market_data_app_key,
                market_data_app_secret=broker.market_data_app_secret,
            )
    vault = _load(CredentialVault, VAULT_BLOCK)
    if vault is not None:
        updates.update(
            kms_provider=vault.kms_provider,
            kms_key_id=vault.kms_key_id,
            kms_endpoint_url=vault.kms_endpoint_url,
        )
        updates.update(_aws_updates(vault.aws_credentials, "kms"))
        if vault.jwt_signing_key is not None:
            updates["jwt_signing_key"] = vault.jwt_signing_key
        for name in ANOMALY_FIELDS:
            value = getattr(vault, name, None)
            if value is not None:
                updates[name] = time.fromisoformat(value) if name.startswith("anomaly_buy_hours") else value
    notifiers = _load(Notifiers, NOTIFIER_BLOCK)
    if notifiers is not None:
        if notifiers.channels:
            updates["notifier"] = ",".join(notifiers.channels)
        if notifiers.slack_credentials is not None:
            updates["slack_token"] = notifiers.slack_credentials.token
        if notifiers.slack_webhook is not None:
            updates["slack_webhook_url"] = notifiers.slack_webhook.url
        updates["slack_operator_channel"] = notifiers.slack_operator_channel
        if notifiers.kakao_templates:
            updates["kakao_templates"] = dict(notifiers.kakao_templates)
        for name in NOTIFIER_FIELDS:
            value = getattr(notifiers, name)
            if value is not None:
                updates[name] = value
        updates.update(_aws_updates(notifiers.aws_credentials, "sns"))
    if not updates:
        return s
    # validated like the environment (enums, URLs, key lengths); errors name fields, never values
    return type(s).model_validate({**s.model_dump(), **updates})
