"""The notifier contract, its one error type, and the guards that keep secrets out of logs and errors."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import SecretStr

from autotrade.notify.format import scrub_secrets
from autotrade.notify.model import Notification


class Channel(StrEnum):
    """Channel names as stored in ``users.notify_channels`` and in the routing preferences."""

    CONSOLE = "console"
    SLACK = "slack"
    SLACK_WEBHOOK = "slack_webhook"
    SNS = "sns"
    KAKAO = "kakao"


class NotificationError(Exception):
    """A channel could not deliver. The message is always safe to log: notifiers build it from status
    codes and provider error codes, never from request URLs, headers or raw client exceptions.

    ``retryable`` is False when sending the same request again cannot help (bad token, unknown channel,
    missing template), so the dispatcher records it at once instead of burning its retries.
    """

    def __init__(self, channel: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(f"{channel}: {message}")
        self.channel = channel
        self.retryable = retryable


@runtime_checkable
class Notifier(Protocol):
    """Delivers one notification to one address on one channel, or raises ``NotificationError``.

    ``to`` is the channel's address (Slack channel or user id, phone number, topic ARN); None means the
    notifier's configured default. Calls are synchronous and may block on the network.
    """

    @property
    def channel(self) -> str: ...

    def send(self, notification: Notification, to: str | None = None) -> None: ...


def reveal(secrets: Iterable[SecretStr | None]) -> list[str]:
    """Plain values of the configured secrets, for masking only."""
    return [s.get_secret_value() for s in secrets if s is not None and s.get_secret_value()]


def safe_error(
    channel: str, exc: BaseException, secrets: Iterable[str], *, retryable: bool = True
) -> NotificationError:
    """Wrap a client exception whose text we do not control: keep its type and a scrubbed message."""
    text = scrub_secrets(str(exc), secrets)[:200]
    return NotificationError(channel, f"{type(exc).__name__}: {text}", retryable=retryable)


class RedactingFilter(logging.Filter):
    """Masks secret values in records of third-party loggers we cannot configure otherwise.

    slack-sdk's WebhookClient logs its URL (which is the webhook's secret) at DEBUG, and httpx logs every
    request URL at INFO (the KakaoTalk app key is a path segment). Filters on a logger run before the
    record propagates to any handler, so the mask holds whatever handlers the application installs.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def add(self, secrets: Iterable[str]) -> None:
        self._secrets.update(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = message
        for secret in self._secrets:
            masked = masked.replace(secret, "***")
        if masked != message:
            record.msg, record.args = masked, None
        return True


_FILTERS: dict[str, RedactingFilter] = {}


def redact_logger(name: str, secrets: Iterable[str]) -> logging.Logger:
    """Install (once per logger) a redacting filter on ``name`` and teach it ``secrets``."""
    logger = logging.getLogger(name)
    flt = _FILTERS.get(name)
    if flt is None:
        flt = _FILTERS[name] = RedactingFilter()
        logger.addFilter(flt)
    flt.add(secrets)
    return logger
