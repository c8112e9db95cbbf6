"""AWS SNS: publish to a topic (e-mail, SQS, Lambda subscribers) or an SMS straight to a phone.

``to`` (or the default target) decides which: an ``arn:`` address is a topic, ``+8210...`` a phone
number in E.164. Topic messages carry ``kind`` and ``severity`` as message attributes so subscribers
can filter (e.g. an on-call SMS subscription on ``severity = CRITICAL`` only). AWS credentials come from
boto3's usual chain (environment, profile, instance role); nothing secret is configured here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from autotrade.notify.base import Channel, NotificationError, safe_error
from autotrade.notify.format import render_text
from autotrade.notify.model import Notification

if TYPE_CHECKING:
    from mypy_boto3_sns.client import SNSClient

# SNS Subject: under 100 characters, no line breaks (Publish API reference).
_SUBJECT_MAX = 99
# One SMS publish is cut by SNS into parts at 70 UCS-2 characters each (Korean is UCS-2) and refused past
# 1,600 characters in all; a phone gets the title and the prose, never the table.
_SMS_MAX = 600

_PERMANENT_CODES = frozenset(
    {"InvalidParameter", "InvalidParameterValue", "NotFound", "AuthorizationError", "EndpointDisabled"}
)


def sms_text(notification: Notification) -> str:
    return "\n".join((f"[{notification.title}]", *notification.lines))[:_SMS_MAX]


class SnsNotifier:
    channel = Channel.SNS.value

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        default_target: str | None = None,
        timeout_seconds: float = 10.0,
        client: SNSClient | None = None,
    ) -> None:
        self._default_target = default_target
        # botocore's own retries would stack on the dispatcher's; one standard-mode retry covers a blip.
        self._client: SNSClient = client or boto3.client(
            "sns",
            region_name=region,
            endpoint_url=endpoint_url,
            config=Config(
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=min(5.0, timeout_seconds),
                read_timeout=timeout_seconds,
            ),
        )

    def send(self, notification: Notification, to: str | None = None) -> None:
        target = to or self._default_target
        if not target:
            raise NotificationError(self.channel, "no topic ARN or phone number", retryable=False)
        try:
            if target.startswith("arn:"):
                self._client.publish(
                    TopicArn=target,
                    Subject=" ".join(notification.title.split())[:_SUBJECT_MAX],
                    Message=render_text(notification),
                    MessageAttributes=_attributes(notification),
                )
            elif target.startswith("+"):
                self._client.publish(
                    PhoneNumber=target,
                    Message=sms_text(notification),
                    MessageAttributes={
                        # Transactional: SNS favours delivery over cost; a stop-loss notice is time-critical.
                        "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"},
                    },
                )
            else:
                raise NotificationError(
                    self.channel, "target is neither an ARN nor an E.164 number", retryable=False
                )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            raise NotificationError(
                self.channel, f"HTTP {status} {code}", retryable=code not in _PERMANENT_CODES
            ) from None
        except BotoCoreError as exc:
            raise safe_error(self.channel, exc, ()) from None


def _attributes(notification: Notification) -> dict[str, Any]:
    return {
        "kind": {"DataType": "String", "StringValue": notification.kind.value},
        "severity": {"DataType": "String", "StringValue": notification.severity.value},
    }
