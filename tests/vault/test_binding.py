"""A key is bound to the accounts the broker says it serves (ka00001), on SQLite and PostgreSQL, against the
simulator over real HTTP: a key filed under another account's number (or a made-up one) is refused and
nothing is stored; the account's name comes from the broker (kt00004 ``acnt_nm``), not from the user."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from autotrade.broker import KiwoomClient
from autotrade.broker.errors import CredentialsError
from autotrade.domain.krx import KST
from autotrade.sim.server import RunningSimulator, running_simulator
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import UserApiKey
from autotrade.vault.gateway import BrokerGateway
from autotrade.vault.keys import KeyStore
from autotrade.vault.kms import LocalKms
from autotrade.vault.registration import RegistrationRefused, register_user_api
from autotrade.vault.tokens import TemporaryTokens

START = datetime(2026, 11, 24, 10, 0, tzinfo=KST)
NUMBERS = itertools.count(1)


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    with running_simulator(seed=5, start=START) as s:
        yield s


@pytest.fixture
async def gateway(sim: RunningSimulator, db_url: str, tmp_path: Path) -> AsyncIterator[BrokerGateway]:
    upgrade(db_url)
    db = Database(db_url)
    client = KiwoomClient(sim.base_url, timeout=10, rate_per_second=500, burst=500)
    gw = BrokerGateway(db, KeyStore(db, LocalKms(tmp_path / "master.key")), client,
                       TemporaryTokens(db, os.urandom(32)), cache_key=os.urandom(32),
                       clock=sim.engine.read_clock)  # fmt: skip
    try:
        yield gw
    finally:
        await client.aclose()
        db.dispose()


def account(sim: RunningSimulator, name: str) -> tuple[str, dict[str, str]]:
    number = f"{5_300_000_000 + next(NUMBERS):010d}"
    sim.admin.create_account(number, name, 10_000_000)
    return number, sim.admin.create_appkey(number)


def keys_of(gw: BrokerGateway) -> list[tuple[str, str, str | None]]:
    with gw.db.unit_of_work() as s:
        rows = s.execute(sa.select(UserApiKey.user_id, UserApiKey.account_no, UserApiKey.account_name))
        return sorted((u, a, n) for u, a, n in rows)


async def test_a_key_under_another_accounts_number_is_refused(
    sim: RunningSimulator, gateway: BrokerGateway
) -> None:
    alice_no, alice_key = account(sim, "앨리스 위탁")
    carol_no, carol_key = account(sim, "캐롤 위탁")
    key, secret = SecretStr(alice_key["appkey"]), SecretStr(alice_key["secretkey"])
    for wrong in (carol_no, "5399999999"):  # somebody else's account, a made-up one
        with pytest.raises(RegistrationRefused, match="does not serve that account number"):
            await register_user_api(gateway, "alice", key, secret, wrong, daily_limit=1_000_000)
    assert keys_of(gateway) == []  # nothing stored for a refused key
    # Carol's real key for her account still registers, named by the broker, not by what she typed.
    carol = SecretStr(carol_key["appkey"]), SecretStr(carol_key["secretkey"])
    await register_user_api(gateway, "carol", *carol, carol_no, daily_limit=1_000_000, account_name="typed")
    info = await register_user_api(gateway, "alice", key, secret, alice_no, daily_limit=1_000_000)
    assert info.account_name == "앨리스 위탁"
    assert keys_of(gateway) == [("alice", alice_no, "앨리스 위탁"), ("carol", carol_no, "캐롤 위탁")]


async def test_the_broker_lists_the_keys_account(sim: RunningSimulator, gateway: BrokerGateway) -> None:
    from autotrade.broker.session import KiwoomSession
    from autotrade.broker.tokens import FixedToken

    number, key = account(sim, "")
    issued = await gateway.client.issue_token(SecretStr(key["appkey"]), SecretStr(key["secretkey"]))
    probe = KiwoomSession(gateway.client, "probe", FixedToken(issued.token.get_secret_value()))
    assert await probe.account_numbers() == (number,)
    assert await probe.account_name() == ""  # an unnamed account: the user's text is the fallback


async def test_a_key_the_broker_refuses_becomes_expired_or_inactive(
    sim: RunningSimulator, gateway: BrokerGateway
) -> None:
    from autotrade.domain.models import ApiStatus
    from autotrade.store.models import SecurityEvent
    from autotrade.vault.registration import check_key

    def state(user: str) -> tuple[ApiStatus, bool]:
        with gateway.db.unit_of_work() as s:
            row = s.execute(sa.select(UserApiKey.api_status, UserApiKey.is_auto_trading_enabled)
                            .where(UserApiKey.user_id == user)).one()  # fmt: skip
            return row[0], row[1]

    for user in ("dave", "erin"):
        number, key = account(sim, user)
        await register_user_api(gateway, user, SecretStr(key["appkey"]), SecretStr(key["secretkey"]),
                                number, daily_limit=1_000_000)  # fmt: skip
        with gateway.db.unit_of_work() as s:
            on = sa.update(UserApiKey).where(UserApiKey.user_id == user).values(is_auto_trading_enabled=True)
            s.execute(on)
        if user == "dave":
            dave_key, dave_no = key, number
        else:
            erin_key = key
    assert await check_key(gateway, "dave", dave_no) is None  # the broker still serves it: nothing changes
    # Kiwoom revokes Dave's key: his cached token is refused, the fresh one cannot be issued -> EXPIRED.
    del sim.engine.appkeys[dave_key["appkey"]]
    sim.admin.expire_tokens(dave_key["appkey"])
    tokens = gateway.provider("dave", dave_no)
    await tokens.invalidate(await tokens.token())  # what a session does on 8005 before it asks again
    with pytest.raises(CredentialsError):
        await tokens.token()
    assert state("dave") == (ApiStatus.EXPIRED, False)
    # Erin's key now serves another account at the broker: the check finds hers missing -> INACTIVE.
    sim.engine.appkeys[erin_key["appkey"]].account_no = account(sim, "other")[0]
    with gateway.db.unit_of_work() as s:
        erin_no = s.scalar(sa.select(UserApiKey.account_no).where(UserApiKey.user_id == "erin"))
    assert await check_key(gateway, "erin", str(erin_no)) is ApiStatus.INACTIVE
    assert state("erin") == (ApiStatus.INACTIVE, False)
    with gateway.db.unit_of_work() as s:
        rule = SecurityEvent.rule == "broker_refused_key"
        events = s.scalars(sa.select(SecurityEvent.action_taken).where(rule))
        assert sorted(events) == ["key EXPIRED; auto-trading off", "key INACTIVE; auto-trading off"]
