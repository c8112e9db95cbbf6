"""Blocks are the configuration: with a Prefect API configured, the runtime's settings are the environment's
overlaid with every saved block, a saved broker block decides where a flow run sends its orders, and no
block secret reaches the run's logs or artifacts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import time

import pytest
from prefect_aws import AwsCredentials
from prefect_slack import SlackCredentials
from prefect_sqlalchemy import SqlAlchemyConnector
from pydantic import SecretStr
from typer.testing import CliRunner

import autotrade.runtime as runtime_module
from autotrade.config import Settings, get_settings
from autotrade.demo.stack import Stack
from autotrade.runtime import build_runtime, configured_settings, get_runtime, set_runtime
from blocks.autotrade_blocks import (
    BROKER_BLOCK,
    DATABASE_BLOCK,
    NOTIFIER_BLOCK,
    VAULT_BLOCK,
    CredentialVault,
    KiwoomBroker,
    Notifiers,
    register_block_types,
    settings_from_blocks,
)
from flows.evening_signal_and_buy import evening_signal_and_buy
from tests.flows.conftest import DAY1, evening_scan
from tests.flows.test_flows import artifacts_of, broker_orders, buy_intents, logs_of

DEAD_BROKER = "http://127.0.0.1:9"  # the discard port: nothing answers
SIGNING_KEY = "block-jwt-signing-key-0123456789abcdef"
SLACK_TOKEN = "xoxb-block-slack-token-7f3a"
KAKAO_SECRET = "kakao-block-secret-91c2"
AWS_SECRET = "aws-block-secret-key-55d1"
MD_SECRET = "market-data-secret-from-block"


@pytest.fixture
def clean_blocks(prefect_server: None) -> Iterator[None]:
    register_block_types()
    yield
    for block_type, name in (
        (KiwoomBroker, BROKER_BLOCK), (CredentialVault, VAULT_BLOCK), (Notifiers, NOTIFIER_BLOCK),
        (SqlAlchemyConnector, DATABASE_BLOCK),
    ):  # fmt: skip
        with contextlib.suppress(Exception):  # not saved by this test
            block_type.delete(name, _sync=True)  # type: ignore[call-arg]


def _save_blocks(stack: Stack) -> None:
    s = stack.settings
    SqlAlchemyConnector(connection_info=s.database_url).save(DATABASE_BLOCK, overwrite=True, _sync=True)  # type: ignore[call-arg]
    KiwoomBroker(
        base_url=stack.sim.base_url, rate_per_second=50.0, burst=50,
        market_data_app_key=s.market_data_app_key, market_data_app_secret=SecretStr(MD_SECRET),
    ).save(BROKER_BLOCK, overwrite=True, _sync=True)  # type: ignore[call-arg]  # fmt: skip
    CredentialVault(
        kms_provider="local", kms_key_id="alias/from-block", jwt_signing_key=SecretStr(SIGNING_KEY),
        aws_credentials=AwsCredentials(
            aws_access_key_id="AKIAKMSBLOCK", aws_secret_access_key=SecretStr(AWS_SECRET),
            region_name="us-east-1",
        ),
        anomaly_burst_requests=77, anomaly_buy_hours_from="07:00",
    ).save(VAULT_BLOCK, overwrite=True, _sync=True)  # type: ignore[call-arg]  # fmt: skip
    Notifiers(
        channels=["console", "sns"], slack_credentials=SlackCredentials(token=SecretStr(SLACK_TOKEN)),
        sns_topic_arn="arn:aws:sns:us-east-1:123456789012:ops",
        aws_credentials=AwsCredentials(
            aws_access_key_id="AKIASNSBLOCK", aws_secret_access_key=SecretStr(AWS_SECRET),
            region_name="us-east-1",
        ),
        kakao_app_key=SecretStr("kakao-app"), kakao_secret_key=SecretStr(KAKAO_SECRET),
        kakao_sender_key=SecretStr("kakao-sender"), operator_phone="01012345678",
    ).save(NOTIFIER_BLOCK, overwrite=True, _sync=True)  # type: ignore[call-arg]  # fmt: skip


async def test_a_saved_broker_block_decides_where_the_run_sends(
    stack: Stack, clean_blocks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The environment names a broker nobody answers at; the saved block names the simulator.
    env = stack.settings.model_copy(update={"broker_base_url": DEAD_BROKER, "notifier": "console"})
    monkeypatch.setattr(runtime_module, "get_settings", lambda: env)
    _save_blocks(stack)

    set_runtime(None)  # as a fresh worker process: get_runtime builds from the environment and the blocks
    rt = get_runtime()
    s = rt.settings
    assert s.broker_base_url == stack.sim.base_url and s.broker_rate_per_second == 50.0
    assert s.market_data_app_secret is not None and s.market_data_app_secret.get_secret_value() == MD_SECRET
    assert s.database_url == stack.settings.database_url
    assert s.kms_key_id == "alias/from-block" and s.jwt_signing_key.get_secret_value() == SIGNING_KEY
    assert s.kms_aws_access_key_id is not None
    assert s.kms_aws_access_key_id.get_secret_value() == "AKIAKMSBLOCK"
    assert s.kms_region == "us-east-1"
    assert s.anomaly_burst_requests == 77 and s.anomaly_buy_hours_from == time(7, 0)
    assert s.notifier == "console,sns" and s.slack_token is not None
    assert s.slack_token.get_secret_value() == SLACK_TOKEN
    assert s.sns_topic_arn == "arn:aws:sns:us-east-1:123456789012:ops" and s.sns_region == "us-east-1"
    assert s.kakao_secret_key is not None and s.kakao_secret_key.get_secret_value() == KAKAO_SECRET
    assert s.operator_phone == "01012345678"
    # the dispatcher has every channel the blocks configure
    inner = rt.notifier.inner  # type: ignore[attr-defined]
    assert {"console", "slack", "sns", "kakao"} <= set(inner._notifiers)
    rt.notifier.close()  # type: ignore[attr-defined]
    rt.db.engine.dispose()

    # The run itself: built as a worker builds it (the blocks over the environment), on the market's clock.
    run_rt = build_runtime(configured_settings(env), stack.sim.engine.read_clock)
    run_rt.notifier = stack.runtime.notifier
    set_runtime(run_rt)
    try:
        evening_scan(stack, DAY1)
        state = await evening_signal_and_buy(trading_day=DAY1, collect_fills=False, return_state=True)
        result = await state.result(raise_on_failure=False)
    finally:
        await run_rt.brokers.aclose()
        run_rt.db.engine.dispose()
        set_runtime(stack.runtime)
    assert state.is_completed(), state.message
    assert result["orders"] > 0 and result["accounts_with_errors"] == 0
    assert broker_orders(stack) == result["orders"] == len(buy_intents(stack, DAY1))

    run_id = state.state_details.flow_run_id
    texts = [str(a.data) + str(a.description) for a in await artifacts_of([run_id])] + await logs_of([run_id])
    assert len(texts) > 3
    secrets = (SIGNING_KEY, SLACK_TOKEN, KAKAO_SECRET, AWS_SECRET, MD_SECRET)
    leaked = [x for x in secrets for t in texts if x in t]
    assert not leaked, "a block secret reached a log or an artifact"


def test_without_a_prefect_api_no_block_is_read(prefect_server: None) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    base = Settings(broker_base_url=DEAD_BROKER)
    with temporary_settings(updates={PREFECT_API_URL: None}):
        assert configured_settings(base) is base  # the embedded mode: not even Prefect's ephemeral server


def test_save_defaults_writes_the_settings_and_they_read_back(
    clean_blocks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autotrade.cli import app

    env = {
        "AUTOTRADE_BROKER_BASE_URL": "http://127.0.0.1:18765", "AUTOTRADE_SLACK_TOKEN": SLACK_TOKEN,
        "AUTOTRADE_SNS_TOPIC_ARN": "arn:aws:sns:ap-northeast-2:1:t", "AUTOTRADE_KAKAO_APP_KEY": "a",
        "AUTOTRADE_KAKAO_SECRET_KEY": KAKAO_SECRET, "AUTOTRADE_KAKAO_SENDER_KEY": "s",
        "AUTOTRADE_JWT_SIGNING_KEY": SIGNING_KEY, "AUTOTRADE_ANOMALY_FAILED_CHECKS": "9",
        "AUTOTRADE_NOTIFIER": "console,slack",
    }  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(app, ["blocks", "save-defaults"])
        assert out.exit_code == 0, out.output
        assert "autotrade-broker" in out.output and SLACK_TOKEN not in out.output
        again = CliRunner().invoke(app, ["blocks", "save-defaults"])
        assert "nothing" in again.output  # existing blocks are kept unless --overwrite
    finally:
        for k in env:
            monkeypatch.delenv(k)
        get_settings.cache_clear()
    s = settings_from_blocks(Settings())  # the environment no longer says any of it: the blocks do
    assert s.broker_base_url == "http://127.0.0.1:18765" and s.notifier == "console,slack"
    assert s.slack_token is not None and s.slack_token.get_secret_value() == SLACK_TOKEN
    assert s.kakao_secret_key is not None and s.kakao_secret_key.get_secret_value() == KAKAO_SECRET
    assert s.jwt_signing_key.get_secret_value() == SIGNING_KEY and s.anomaly_failed_checks == 9
    assert s.sns_topic_arn == "arn:aws:sns:ap-northeast-2:1:t"
