"""The runtime as a deployed process builds it: ``get_runtime()`` from the environment's settings (no test
wiring), over a temporary database and a running simulator, with the local or the AWS KMS provider (moto's
server); its notifier's database failure recorder; and the live clock's wait (``PassingTime``)."""

from __future__ import annotations

import asyncio
import time as wall
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from autotrade.access import GatewayAccess
from autotrade.config import get_settings
from autotrade.domain.krx import KST
from autotrade.notify import OPERATOR, Notification, NotificationKind, Severity
from autotrade.runtime import SELL, PassingTime, get_runtime, set_runtime
from autotrade.sim.server import RunningSimulator, running_simulator
from autotrade.store.migrate import upgrade
from autotrade.store.models import NotificationFailure, UserApiKey
from autotrade.trading.buys import AccountRef
from autotrade.vault.kms import AwsKms, LocalKms
from autotrade.vault.registration import register_user_api
from tests.flows.conftest import DAY1


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    with running_simulator(seed=1, start=datetime.combine(DAY1, time(10, 0), tzinfo=KST)) as s:
        s.admin.add_stocks([{"code": "005930", "name": "삼성전자", "prev_close": 71_000}])
        yield s


@pytest.fixture
def no_prefect_api() -> Iterator[None]:
    """A process with no Prefect API (the embedded mode): the settings are the environment's alone."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


@pytest.mark.parametrize("provider", ["local", "aws"])
async def test_get_runtime_builds_the_process_from_the_environment(
    sim: RunningSimulator,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_prefect_api: None,
    provider: str,
) -> None:
    upgrade(db_url)
    env = {
        "AUTOTRADE_DATABASE_URL": db_url,
        "AUTOTRADE_DATA_DIR": str(tmp_path),
        "AUTOTRADE_LOCAL_MASTER_KEY_PATH": str(tmp_path / "master.key"),
        "AUTOTRADE_BROKER_BASE_URL": sim.base_url,
        # Every notification to the operator goes to Slack, which refuses the connection: the failure
        # lands in the database through the recorder the runtime wires.
        "AUTOTRADE_NOTIFIER": "slack",
        "AUTOTRADE_SLACK_TOKEN": "xoxb-test",
        "AUTOTRADE_SLACK_BASE_URL": "http://127.0.0.1:9/api",
        "AUTOTRADE_NOTIFY_TIMEOUT_SECONDS": "1",
    }
    key_id = ""
    if provider == "aws":
        import boto3

        url = _moto(monkeypatch)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        client = boto3.client("kms", region_name="ap-northeast-2", endpoint_url=url)
        key_id = client.create_key(Description="runtime test")["KeyMetadata"]["KeyId"]
        env |= {"AUTOTRADE_KMS_PROVIDER": "aws", "AUTOTRADE_KMS_KEY_ID": key_id,
                "AUTOTRADE_KMS_REGION": "ap-northeast-2", "AUTOTRADE_KMS_ENDPOINT_URL": url}  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)

    get_settings.cache_clear()  # a new process: the settings are read once, from this environment
    set_runtime(None)
    rt = get_runtime()
    try:
        assert rt.settings.database_url == db_url
        assert get_runtime() is rt  # one per process
        assert isinstance(rt.brokers, GatewayAccess)
        assert isinstance(rt.brokers.kms, AwsKms if provider == "aws" else LocalKms)
        assert isinstance(rt.time, PassingTime)

        # A user's key registered through the runtime's gateway, then the account read through it.
        sim.admin.create_account("7001000011", "han", 12_345_678)
        issued = sim.admin.create_appkey("7001000011")
        await register_user_api(
            rt.brokers.gateway(), "han", SecretStr(issued["appkey"]), SecretStr(issued["secretkey"]),
            "7001000011", daily_limit=1_000_000, account_name="han",
        )  # fmt: skip
        assert rt.accounts(trading_only=False) == [AccountRef("han", "7001000011")]
        broker = await rt.brokers.for_account(AccountRef("han", "7001000011"), SELL)
        view = await broker.account()
        assert view.cash == 12_345_678, view
        with rt.db.unit_of_work() as s:
            row = s.scalars(sa.select(UserApiKey)).one()
            sealed = row.kms_key_id
        assert sealed == rt.brokers.kms.key_id  # sealed by the configured provider's key
        if provider == "aws":
            assert key_id in sealed

        rt.notify(
            Notification(
                kind=NotificationKind.ERROR, audience=OPERATOR, title="test", lines=("a line",),
                severity=Severity.ERROR, occurred_at=datetime(2026, 11, 18, 10, 0, tzinfo=KST),
            )
        )  # fmt: skip
        deadline = wall.monotonic() + 30
        failures: list[tuple[str, str, str]] = []
        while wall.monotonic() < deadline and not failures:
            await asyncio.sleep(0.2)
            with rt.db.unit_of_work() as s:
                rows = s.scalars(sa.select(NotificationFailure)).all()
                failures = [(f.channel, f.kind, f.audience) for f in rows]
        assert failures and failures[0][:2] == ("slack", "ERROR"), failures
    finally:
        rt.notifier.close(5)  # type: ignore[attr-defined]
        await rt.brokers.aclose()
        rt.db.dispose()
        set_runtime(None)
        get_settings.cache_clear()


_MOTO: dict[str, str] = {}


def _moto(monkeypatch: pytest.MonkeyPatch) -> str:
    """moto's KMS server on 127.0.0.1, one for the test session (as tests/vault starts it)."""
    if "url" not in _MOTO:
        from moto.server import ThreadedMotoServer

        from tests.vault.conftest import free_port

        port = free_port()
        ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
        _MOTO["url"] = f"http://127.0.0.1:{port}"
    return _MOTO["url"]


async def test_passing_time_waits_for_the_live_clock() -> None:
    """The live wait returns once the wall clock has passed the moment, not before, and not much after."""
    control = PassingTime(lambda: datetime.now(KST), poll_seconds=0.05)
    start = wall.monotonic()
    await control.wait_until(datetime.now(KST) + timedelta(seconds=0.6))
    waited = wall.monotonic() - start
    assert 0.6 <= waited < 3.0, waited
    start = wall.monotonic()
    await control.wait_until(datetime.now(KST) - timedelta(seconds=5))  # already passed: at once
    assert wall.monotonic() - start < 0.5
