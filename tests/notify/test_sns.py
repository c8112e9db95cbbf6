"""AWS SNS through boto3 against moto's server over real HTTP (``endpoint_url``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from moto.sns.models import sns_backends

from autotrade.domain.models import Tier
from autotrade.notify import NotificationError, SnsNotifier
from autotrade.notify.messages import TierFill, tier_triggered
from tests.notify.conftest import free_port

REGION = "ap-northeast-2"
ACCOUNT = "123456789012"  # moto's default account


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    saved = {
        k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def topic_with_queue(moto_url: str, request: pytest.FixtureRequest) -> tuple[str, Any, str]:
    """A topic with an SQS queue subscribed, as an operator's e-mail/Lambda fan-out would be."""
    sns = boto3.client("sns", region_name=REGION, endpoint_url=moto_url)
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto_url)
    name = f"autotrade-{request.node.name[:40]}"
    topic_arn = sns.create_topic(Name=name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return topic_arn, sqs, queue_url


def _stop(at: datetime) -> Any:
    return tier_triggered("u1", TierFill("005930", "삼성전자", Tier.STOP_LOSS, 14, 67_450, -49_700, 0), at)


def test_publish_to_topic_reaches_the_subscribed_queue(
    moto_url: str, topic_with_queue: tuple[str, Any, str], at: datetime
) -> None:
    topic_arn, sqs, queue_url = topic_with_queue
    SnsNotifier(region=REGION, endpoint_url=moto_url, default_target=topic_arn).send(_stop(at))

    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    (envelope,) = [json.loads(m["Body"]) for m in messages]
    assert envelope["TopicArn"] == topic_arn
    assert envelope["Subject"] == "손절 매도: 삼성전자(005930)"
    assert envelope["Message"].split("\n") == [
        "[손절 매도: 삼성전자(005930)]",
        "삼성전자(005930) 14주 67,450원에 손절 매도",
        "실현손익 -49,700원, 전량 매도",
        "구분: 손절",
        "수량: 14주",
        "가격: 67,450원",
        "실현손익: -49,700원",
        "2026-11-25 09:15 KST",
    ]
    assert envelope["MessageAttributes"]["kind"] == {"Type": "String", "Value": "TIER_TRIGGERED"}
    assert envelope["MessageAttributes"]["severity"] == {"Type": "String", "Value": "WARNING"}


def test_explicit_address_overrides_the_default(
    moto_url: str, topic_with_queue: tuple[str, Any, str], at: datetime
) -> None:
    topic_arn, _, _ = topic_with_queue
    SnsNotifier(region=REGION, endpoint_url=moto_url, default_target="arn:aws:sns:x:1:none").send(
        _stop(at), topic_arn
    )
    topic = sns_backends[ACCOUNT][REGION].topics[topic_arn]
    (_, message, subject, _, _) = topic.sent_notifications[-1]
    assert subject == "손절 매도: 삼성전자(005930)"
    assert "67,450원" in message


def test_sms_to_a_phone_gets_the_short_text(moto_url: str, at: datetime) -> None:
    SnsNotifier(region=REGION, endpoint_url=moto_url).send(_stop(at), "+821012345678")
    phone, message = list(sns_backends[ACCOUNT][REGION].sms_messages.values())[-1]
    assert phone == "+821012345678"
    assert message.split("\n") == [
        "[손절 매도: 삼성전자(005930)]",
        "삼성전자(005930) 14주 67,450원에 손절 매도",
        "실현손익 -49,700원, 전량 매도",
    ]


def test_unknown_topic_is_a_permanent_failure(moto_url: str, at: datetime) -> None:
    notifier = SnsNotifier(region=REGION, endpoint_url=moto_url)
    with pytest.raises(NotificationError) as info:
        notifier.send(_stop(at), f"arn:aws:sns:{REGION}:{ACCOUNT}:does-not-exist")
    assert info.value.retryable is False
    assert "NotFound" in str(info.value)


def test_missing_or_malformed_target_is_refused(moto_url: str, at: datetime) -> None:
    notifier = SnsNotifier(region=REGION, endpoint_url=moto_url)
    with pytest.raises(NotificationError, match="no topic ARN"):
        notifier.send(_stop(at))
    with pytest.raises(NotificationError, match="neither an ARN"):
        notifier.send(_stop(at), "010-1234-5678")


def test_unreachable_endpoint_is_retryable(at: datetime) -> None:
    notifier = SnsNotifier(region=REGION, endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(NotificationError) as info:
        notifier.send(_stop(at), f"arn:aws:sns:{REGION}:{ACCOUNT}:t")
    assert info.value.retryable is True
