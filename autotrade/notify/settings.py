"""Notification settings and the factory that turns them into notifiers and a dispatcher.

``NotifySettings`` is a plain pydantic model so its fields can be folded into the central
``autotrade.config.Settings`` (env prefix ``AUTOTRADE_``) or filled from the Prefect ``Notifiers`` block.
A channel is built only when its credentials are present; the console is always available.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field, SecretStr

from autotrade.notify.background import BackgroundDispatcher
from autotrade.notify.base import Channel, Notifier
from autotrade.notify.console import ConsoleNotifier
from autotrade.notify.dispatcher import (
    FailureRecorder,
    NotificationDispatcher,
    RetryPolicy,
    Route,
    RoutesFor,
)
from autotrade.notify.kakao import NHN_ALIMTALK_URL, KakaoAlimtalkNotifier
from autotrade.notify.model import NotificationKind
from autotrade.notify.slack import (
    DEFAULT_MAX_RETRY_AFTER_SECONDS,
    SLACK_API_URL,
    SlackWebApiNotifier,
    SlackWebhookNotifier,
)
from autotrade.notify.sns import SnsNotifier


class NotifySettings(BaseModel):
    # Slack
    slack_token: SecretStr | None = None
    slack_base_url: str = SLACK_API_URL
    slack_webhook_url: SecretStr | None = None
    slack_operator_channel: str = "#autotrade-ops"
    slack_rate_limit_retries: int = Field(2, ge=0)
    # A 429 asking for a longer wait than this is not slept through (the dispatcher retries and counts it).
    slack_max_retry_after_seconds: float = Field(DEFAULT_MAX_RETRY_AFTER_SECONDS, ge=0)
    # AWS SNS
    sns_region: str = "ap-northeast-2"
    sns_endpoint_url: str | None = None
    sns_topic_arn: str | None = None
    # KakaoTalk alimtalk (NHN Cloud)
    kakao_base_url: str = NHN_ALIMTALK_URL
    kakao_app_key: SecretStr | None = None
    kakao_secret_key: SecretStr | None = None
    kakao_sender_key: SecretStr | None = None
    kakao_templates: dict[NotificationKind, str] = Field(default_factory=dict)
    # operator and delivery
    operator_channels: list[Channel] = Field(default_factory=lambda: [Channel.CONSOLE])
    operator_phone: str | None = None
    timeout_seconds: int = Field(10, gt=0)
    retry_attempts: int = Field(3, ge=1)
    retry_backoff_seconds: float = Field(1.0, ge=0)
    retry_max_backoff_seconds: float = Field(30.0, ge=0)
    breaker_threshold: int = Field(5, ge=0)
    breaker_cooldown_seconds: float = Field(60.0, ge=0)
    # The worker thread's queue (autotrade.notify.background): notices beyond it are dropped and recorded;
    # flows wait at most ``flush_timeout_seconds`` at their end for the queue to drain.
    queue_size: int = Field(1000, ge=1)
    flush_timeout_seconds: float = Field(10.0, ge=0)


def build_notifiers(settings: NotifySettings) -> list[Notifier]:
    notifiers: list[Notifier] = [ConsoleNotifier()]
    if settings.slack_token is not None:
        notifiers.append(
            SlackWebApiNotifier(
                settings.slack_token,
                default_channel=settings.slack_operator_channel,
                base_url=settings.slack_base_url,
                timeout_seconds=settings.timeout_seconds,
                rate_limit_retries=settings.slack_rate_limit_retries,
                max_retry_after_seconds=settings.slack_max_retry_after_seconds,
            )
        )
    if settings.slack_webhook_url is not None:
        notifiers.append(
            SlackWebhookNotifier(
                settings.slack_webhook_url,
                timeout_seconds=settings.timeout_seconds,
                rate_limit_retries=settings.slack_rate_limit_retries,
                max_retry_after_seconds=settings.slack_max_retry_after_seconds,
            )
        )
    if settings.sns_topic_arn is not None or settings.sns_endpoint_url is not None:
        notifiers.append(
            SnsNotifier(
                region=settings.sns_region,
                endpoint_url=settings.sns_endpoint_url,
                default_target=settings.sns_topic_arn,
                timeout_seconds=settings.timeout_seconds,
            )
        )
    if settings.kakao_app_key and settings.kakao_secret_key and settings.kakao_sender_key:
        notifiers.append(
            KakaoAlimtalkNotifier(
                app_key=settings.kakao_app_key,
                secret_key=settings.kakao_secret_key,
                sender_key=settings.kakao_sender_key,
                templates=settings.kakao_templates,
                base_url=settings.kakao_base_url,
                timeout_seconds=settings.timeout_seconds,
            )
        )
    return notifiers


def operator_routes(settings: NotifySettings) -> list[Route]:
    """Operator addresses: Slack's operator channel is the notifier default; Kakao needs the phone."""
    routes = []
    for channel in settings.operator_channels:
        to = settings.operator_phone if channel is Channel.KAKAO else None
        routes.append(Route(channel.value, to))
    return routes


def build_dispatcher(
    settings: NotifySettings,
    user_routes: RoutesFor,
    *,
    recorder: FailureRecorder | None = None,
    notifiers: Sequence[Notifier] | None = None,
) -> NotificationDispatcher:
    return NotificationDispatcher(
        build_notifiers(settings) if notifiers is None else notifiers,
        user_routes=user_routes,
        operator_routes=operator_routes(settings),
        recorder=recorder,
        retry=RetryPolicy(
            attempts=settings.retry_attempts,
            backoff_seconds=settings.retry_backoff_seconds,
            max_backoff_seconds=settings.retry_max_backoff_seconds,
        ),
        breaker_threshold=settings.breaker_threshold,
        breaker_cooldown_seconds=settings.breaker_cooldown_seconds,
    )


def build_background_dispatcher(
    settings: NotifySettings,
    user_routes: RoutesFor,
    *,
    recorder: FailureRecorder | None = None,
    notifiers: Sequence[Notifier] | None = None,
) -> BackgroundDispatcher:
    """The dispatcher of a process that trades: ``dispatch`` queues and returns at once, a worker thread
    delivers (see ``autotrade.notify.background``)."""
    inner = build_dispatcher(settings, user_routes, recorder=recorder, notifiers=notifiers)
    return BackgroundDispatcher(
        inner,
        recorder=recorder,
        queue_size=settings.queue_size,
        flush_timeout_seconds=settings.flush_timeout_seconds,
    )
