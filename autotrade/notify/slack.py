"""Slack: Web API (``chat.postMessage``, bot token, per-user DMs) and incoming webhooks (one fixed channel).

Both render the same Block Kit message (``slack_blocks``) with a plain-text fallback for notifications
and screen readers. slack-sdk's ``RateLimitErrorRetryHandler`` is attached to both clients so a 429 is
waited out (``Retry-After``) inside the SDK, but only up to ``max_retry_after_seconds``: a longer
``Retry-After`` is not slept through, the 429 becomes a retryable ``NotificationError`` for the dispatcher's
own retry and circuit breaker. The SDK sleeps synchronously, so these clients run on the notification
worker thread (``autotrade.notify.background``), never on the event loop that sends sells.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web import WebClient
from slack_sdk.webhook import WebhookClient

from autotrade.notify.base import Channel, NotificationError, redact_logger, safe_error
from autotrade.notify.format import kst, render_table, render_text, scrub_secrets
from autotrade.notify.model import Notification, Severity

SLACK_API_URL = "https://slack.com/api/"

# Block Kit limits (api.slack.com/reference/block-kit/blocks): header text 150 chars, section text
# 3000, at most 10 fields per section. We stay under them rather than let Slack reject the message.
_HEADER_MAX = 150
_SECTION_MAX = 3000
_FIELDS_MAX = 10
_FALLBACK_MAX = 3000

_SEVERITY_ICON = {
    Severity.INFO: ":information_source:",
    Severity.WARNING: ":warning:",
    Severity.ERROR: ":x:",
    Severity.CRITICAL: ":rotating_light:",
}

# Slack error codes after which the same request cannot succeed; others are worth retrying.
_PERMANENT_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "channel_not_found",
        "user_not_found",
        "is_archived",
        "not_in_channel",
        "invalid_blocks",
        "invalid_arguments",
        "msg_too_long",
        "no_text",
    }
)


def _escape(text: str) -> str:
    """mrkdwn control characters (Slack's formatting guide): a stock name with '&' must not break markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _chunks(text: str, limit: int) -> list[str]:
    """Split on line boundaries into pieces of at most ``limit`` characters."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.split("\n"):
        line = line[:limit]
        if current and size + len(line) + 1 > limit:
            pieces.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        pieces.append("\n".join(current))
    return pieces


def slack_blocks(notification: Notification) -> list[dict[str, Any]]:
    """Block Kit layout: header, prose, key/value fields, the table as preformatted text, link, context."""
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": notification.title[:_HEADER_MAX], "emoji": True},
        }
    ]
    if notification.lines:
        for piece in _chunks(_escape("\n".join(notification.lines)), _SECTION_MAX):
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": piece}})
    facts = notification.facts
    for start in range(0, len(facts), _FIELDS_MAX):
        fields = [
            {"type": "mrkdwn", "text": f"*{_escape(f.label)}*\n{_escape(f.value)}"}
            for f in facts[start : start + _FIELDS_MAX]
        ]
        blocks.append({"type": "section", "fields": fields})
    if notification.table is not None and notification.table.rows:
        # A fenced block keeps the columns aligned; 8 characters leave room for the fences.
        for piece in _chunks(_escape(render_table(notification.table)), _SECTION_MAX - 8):
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```\n{piece}\n```"}})
    if notification.link:
        link = notification.link
        text = f"<{link}|리포트 열기>" if link.startswith(("http://", "https://")) else f"`{_escape(link)}`"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    icon = _SEVERITY_ICON[notification.severity]
    context = f"{icon} {notification.severity} · {notification.kind} · {kst(notification.occurred_at)}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return blocks


def fallback_text(notification: Notification) -> str:
    return render_text(notification)[:_FALLBACK_MAX]


DEFAULT_MAX_RETRY_AFTER_SECONDS = 10.0


def _retry_after(response: HttpResponse) -> float | None:
    for name, values in response.headers.items():
        if name.lower() == "retry-after" and values:
            try:
                return float(values[0])
            except ValueError:
                return None
    return None


class CappedRateLimitHandler(RateLimitErrorRetryHandler):
    """The SDK's 429 handler (it sleeps ``Retry-After`` plus up to a second), refusing to wait when Slack
    asks for more than ``max_wait_seconds``: a 429 storm then costs the worker one request per attempt,
    not minutes of sleep, and the dispatcher's breaker sees the channel failing."""

    def __init__(self, max_retry_count: int, max_wait_seconds: float) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait_seconds = max_wait_seconds

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = _retry_after(response)
        return wait is None or wait <= self.max_wait_seconds


def _retry_handlers(rate_limit_retries: int, max_retry_after_seconds: float) -> list[RetryHandler]:
    """Only 429s are retried inside the SDK, because only Slack knows how long to wait (Retry-After).
    The SDK's default connection-error handler is left out on purpose: connection errors are retried
    once, by the dispatcher, under its backoff and circuit breaker, not twice with compounding waits."""
    return [CappedRateLimitHandler(rate_limit_retries, max_retry_after_seconds)]


class SlackWebApiNotifier:
    """``chat.postMessage`` with a bot token. ``to`` is a channel id, ``#name`` or a user id (a DM)."""

    channel = Channel.SLACK.value

    def __init__(
        self,
        token: SecretStr,
        *,
        default_channel: str,
        base_url: str = SLACK_API_URL,
        timeout_seconds: int = 10,
        rate_limit_retries: int = 2,
        max_retry_after_seconds: float = DEFAULT_MAX_RETRY_AFTER_SECONDS,
    ) -> None:
        self._secrets = [token.get_secret_value()]
        self._default_channel = default_channel
        self._client = WebClient(
            token=token.get_secret_value(),
            base_url=base_url,
            timeout=timeout_seconds,
            logger=redact_logger("autotrade.notify.slack.sdk", self._secrets),
            retry_handlers=_retry_handlers(rate_limit_retries, max_retry_after_seconds),
        )

    def send(self, notification: Notification, to: str | None = None) -> None:
        try:
            self._client.chat_postMessage(
                channel=to or self._default_channel,
                text=fallback_text(notification),
                blocks=slack_blocks(notification),
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as exc:
            code = str(exc.response.get("error", "unknown_error"))
            status = exc.response.status_code
            client_error = 400 <= status < 500 and status != 429
            retryable = code not in _PERMANENT_ERRORS and not client_error
            raise NotificationError(self.channel, f"HTTP {status} {code}", retryable=retryable) from None
        except Exception as exc:
            raise safe_error(self.channel, exc, self._secrets) from None


class SlackWebhookNotifier:
    """An incoming webhook. The URL is the credential and fixes the channel, so ``to`` is ignored."""

    channel = Channel.SLACK_WEBHOOK.value

    def __init__(
        self,
        url: SecretStr,
        *,
        timeout_seconds: int = 10,
        rate_limit_retries: int = 2,
        max_retry_after_seconds: float = DEFAULT_MAX_RETRY_AFTER_SECONDS,
    ) -> None:
        self._secrets = [url.get_secret_value()]
        self._client = WebhookClient(
            url.get_secret_value(),
            timeout=timeout_seconds,
            # The SDK logs the full URL at DEBUG; this logger masks it.
            logger=redact_logger("autotrade.notify.slack.sdk", self._secrets),
            retry_handlers=_retry_handlers(rate_limit_retries, max_retry_after_seconds),
        )

    def send(self, notification: Notification, to: str | None = None) -> None:
        try:
            response = self._client.send(
                text=fallback_text(notification),
                blocks=slack_blocks(notification),
                unfurl_links=False,
                unfurl_media=False,
            )
        except Exception as exc:
            raise safe_error(self.channel, exc, self._secrets) from None
        if response.status_code != 200:
            status = response.status_code
            # Webhook errors are short codes ("invalid_payload", "no_service"); still masked and cut.
            body = scrub_secrets(response.body or "", self._secrets)[:100]
            retryable = status == 429 or status >= 500
            raise NotificationError(self.channel, f"HTTP {status} {body}", retryable=retryable)
