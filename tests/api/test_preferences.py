"""Every channel wired: a user chooses channels and gives a mobile number through the API (validated), and
the runtime's dispatcher, built from the settings alone, delivers over the fake Slack server, moto's SNS
and the fake KakaoTalk provider: a kill-switch alert reaches the operator (Slack, SNS topic) and the user
(KakaoTalk and SMS) with the recovery steps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient
from moto.sns.models import sns_backends
from pydantic import SecretStr

from autotrade.config import Settings
from autotrade.runtime import build_notifier
from autotrade.store.db import Database
from autotrade.store.models import User
from autotrade.vault.anomaly import AlertEvent, Grade, SecurityAlert
from autotrade.vault.notices import security_notices
from tests.api.conftest import Calls, auth, signup_login
from tests.notify.conftest import serve
from tests.notify.test_kakao import APP_KEY, SECRET_KEY, SENDER_KEY, FakeNhnAlimtalk
from tests.notify.test_slack import FakeSlack
from tests.notify.test_sns import ACCOUNT, REGION, moto_url  # noqa: F401 - the moto server fixture

Api = tuple[TestClient, Database, Calls]
URL = "/api/me/notifications"


def test_preferences_are_validated_and_stored(api: Api) -> None:
    client, db, _ = api
    token = signup_login(client, "prefs@example.com")
    r = client.get(URL, headers=auth(token))
    assert r.status_code == 200 and r.json() == {"channels": ["console"], "phone": None}

    for body in ({"channels": ["kakao"]}, {"channels": ["sns"], "phone": None}):  # no number given ever
        r = client.put(URL, json=body, headers=auth(token))
        assert r.status_code == 409 and "needs a mobile number" in r.text, (body, r.text)
    for body in (
        {"channels": ["kakao"], "phone": "02-123-4567"},  # a landline
        {"channels": ["kakao"], "phone": "011-1234-5678"},  # not 010
        {"channels": ["kakao"], "phone": "010-1234-567"},  # a digit short
        {"channels": ["kakao"], "phone": "010-1234-56789"},
        {"channels": ["slack"], "phone": "010-1234-5678"},  # Slack is the operator's channel
        {"channels": [], "phone": "010-1234-5678"},
    ):
        r = client.put(URL, json=body, headers=auth(token))
        assert r.status_code == 422, (body, r.text)
        assert "02-123-4567" not in r.text and "011-1234-5678" not in r.text  # the input is not echoed

    r = client.put(URL, json={"channels": ["kakao", "sns", "kakao"], "phone": "+82 10-1234-5678"},
                   headers=auth(token))  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json() == {"channels": ["kakao", "sns"], "phone": "010-1234-5678"}
    with db.unit_of_work() as s:
        user = s.query(User).filter_by(email="prefs@example.com").one()
        assert (user.notify_channels, user.phone) == ("kakao,sns", "01012345678")
    again = client.get(URL, headers=auth(token)).json()
    assert again == {"channels": ["kakao", "sns"], "phone": "010-1234-5678"}
    # the number given before stays when a later change leaves it out
    r = client.put(URL, json={"channels": ["sns"]}, headers=auth(token))
    assert r.status_code == 200 and r.json() == {"channels": ["sns"], "phone": "010-1234-5678"}
    assert client.put(URL, json={"channels": ["console"]}).status_code == 401


@pytest.fixture
def providers() -> Iterator[tuple[FakeSlack, str, FakeNhnAlimtalk, str]]:
    slack, kakao = FakeSlack(), FakeNhnAlimtalk()
    with serve(slack.app()) as slack_url, serve(kakao.app()) as kakao_url:
        yield slack, slack_url, kakao, kakao_url


def test_a_kill_switch_alert_reaches_operator_and_user_on_every_channel(
    api: Api, providers: tuple[FakeSlack, str, FakeNhnAlimtalk, str], moto_url: str  # noqa: F811
) -> None:
    client, db, _ = api
    slack, slack_url, kakao, kakao_url = providers
    token = signup_login(client, "alerted@example.com")
    r = client.put(URL, json={"channels": ["kakao", "sns"], "phone": "010-2222-3333"}, headers=auth(token))
    assert r.status_code == 200, r.text
    with db.unit_of_work() as s:
        user_id = s.query(User).filter_by(email="alerted@example.com").one().user_id

    sns = boto3.client("sns", region_name=REGION, endpoint_url=moto_url)
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto_url)
    topic = sns.create_topic(Name="autotrade-ops-wired")["TopicArn"]
    queue = sqs.create_queue(QueueName="autotrade-ops-wired")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
    queue_arn = attributes["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    sms_before = len(sns_backends[ACCOUNT][REGION].sms_messages)

    # Only settings: the operator on Slack and the SNS topic, users wherever they chose.
    settings = Settings(
        database_url=db.engine.url.render_as_string(hide_password=False), notifier="slack,sns",
        slack_token=SecretStr("xoxb-wired"), slack_base_url=f"{slack_url}/api/",
        sns_topic_arn=topic, sns_endpoint_url=moto_url, sns_region=REGION,
        sns_aws_access_key_id=SecretStr("testing"), sns_aws_secret_access_key=SecretStr("testing"),
        kakao_base_url=kakao_url, kakao_app_key=SecretStr(APP_KEY), kakao_secret_key=SecretStr(SECRET_KEY),
        kakao_sender_key=SecretStr(SENDER_KEY), kakao_templates={"SECURITY_ALERT": "AT_SECURITY_01"},
    )  # fmt: skip
    notifier: Any = build_notifier(settings, db)
    sink = security_notices(notifier.dispatch)
    sink(
        SecurityAlert(
            event=AlertEvent.DISABLED, user_id=user_id, account_no="8100000042", rule="burst",
            grade=Grade.STEP_UP, action="key disabled", detail="130 requests in 10 s",
            at=datetime(2026, 11, 25, 1, 0, tzinfo=UTC), positions=("005930 x10",),
        )
    )  # fmt: skip
    assert notifier.flush() and notifier.close()

    # The user: KakaoTalk to the number given, an SMS to its E.164 form, the recovery steps in it.
    [(_, _, body)] = [r for r in kakao.received if r[2]["recipientList"][0]["recipientNo"] == "01022223333"]
    assert body["templateCode"] == "AT_SECURITY_01"
    sms = list(sns_backends[ACCOUNT][REGION].sms_messages.values())[sms_before:]
    [text] = [m for phone, m in sms if phone == "+821022223333"]
    assert "비밀번호를 변경" in text and "앱키를" in text and "새 키를 다시 등록" in text
    # The operator: Slack's operator channel and the SNS topic, both with the rule.
    posted = [r.body for r in slack.received if r.path == "/api/chat.postMessage"]
    assert posted and all(p["channel"] == "#autotrade-ops" for p in posted)
    assert any("burst" in json.dumps(p, ensure_ascii=False) for p in posted)
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    assert messages and any("burst" in json.loads(m["Body"])["Message"] for m in messages)
