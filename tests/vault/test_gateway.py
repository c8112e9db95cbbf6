"""The broker gateway against the simulator over real HTTP, on SQLite and PostgreSQL: every request is
checked (key, token signature, expiry, revocation, scope, spending cap, daily limit) and logged; a
high-risk hit disables the key, revokes the broker token and alerts within the minute; KMS Decrypt runs
once per user per day; no secret reaches the database or the logs in clear."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from autotrade.broker import KiwoomClient, TradeType
from autotrade.domain.krx import KST
from autotrade.domain.models import ApiStatus
from autotrade.runtime import READ, TRADE
from autotrade.sim.server import RunningSimulator, running_simulator
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import AccessLog, BrokerTokenCache, SecurityEvent, UserApiKey
from autotrade.vault.anomaly import AnomalyDetector, AnomalySettings, SecurityAlert
from autotrade.vault.gateway import AccessDenied, BrokerGateway
from autotrade.vault.keys import KeyStore
from autotrade.vault.kms import KmsProvider, LocalKms
from autotrade.vault.registration import register_user_api
from autotrade.vault.tokens import TemporaryTokens

START = datetime(2026, 11, 24, 10, 0, tzinfo=KST)  # a Tuesday, market open
SIGNING_KEY = os.urandom(32)
ACCOUNTS = itertools.count(1)
CACHE_KEY = os.urandom(32)  # the sealed broker-token cache's key, shared by gateway processes


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    with running_simulator(seed=21, start=START) as s:
        s.admin.add_stocks([{"code": "005930", "name": "삼성전자", "prev_close": 50_000},
                            {"code": "000660", "name": "SK하이닉스", "prev_close": 100_000}])  # fmt: skip
        yield s


@dataclass
class Vault:
    sim: RunningSimulator
    db: Database
    kms: KmsProvider
    gateway: BrokerGateway
    keys: dict[str, dict[str, str]] = field(default_factory=dict)  # user -> simulator key
    acct: dict[str, str] = field(default_factory=dict)  # user -> account number
    alerts: list[SecurityAlert] = field(default_factory=list)

    async def register(self, user: str, daily_limit: int = 1_000_000) -> None:
        account = f"{5_100_000_000 + next(ACCOUNTS):010d}"
        self.acct[user] = account
        self.sim.admin.create_account(account, user, 50_000_000)
        key = self.sim.admin.create_appkey(account)
        await register_user_api(self.gateway, user, SecretStr(key["appkey"]), SecretStr(key["secretkey"]),
                                account, daily_limit=daily_limit)  # fmt: skip
        self.keys[user] = key

    def status(self, user: str, account: str) -> ApiStatus:
        with self.db.unit_of_work() as s:
            return s.scalar(
                sa.select(UserApiKey.api_status).where(
                    UserApiKey.user_id == user, UserApiKey.account_no == account
                )
            )  # type: ignore[return-value]


async def make_vault(sim: RunningSimulator, db_url: str, kms: KmsProvider) -> Vault:
    upgrade(db_url)
    db = Database(db_url)
    client = KiwoomClient(sim.base_url, timeout=10, rate_per_second=500, burst=500)
    vault = Vault(sim, db, kms, None)  # type: ignore[arg-type]
    vault.gateway = BrokerGateway(
        db, KeyStore(db, kms), client, TemporaryTokens(db, SIGNING_KEY), cache_key=CACHE_KEY,
        alert=vault.alerts.append, clock=sim.engine.read_clock,
    )  # fmt: skip
    await vault.register("alice")
    await vault.register("bob")
    return vault


@pytest.fixture
async def vault(sim: RunningSimulator, db_url: str, tmp_path: Path) -> AsyncIterator[Vault]:
    v = await make_vault(sim, db_url, LocalKms(tmp_path / "master.key"))
    try:
        yield v
    finally:
        await v.gateway.client.aclose()
        v.db.dispose()


async def test_a_token_reaches_only_its_own_user_and_account(vault: Vault) -> None:
    gw = vault.gateway
    alice = await gw.session(gw.get_temporary_token("alice", vault.acct["alice"], READ), origin="test")
    assert (await alice.deposit()).orderable > 0
    # Alice's user with Bob's account: no such key, refused before any broker call.
    crossed = gw.get_temporary_token("alice", vault.acct["bob"], READ)
    with pytest.raises(AccessDenied, match="not registered"):
        await gw.session(crossed, origin="test")
    # A token signed with another key, or altered, is refused.
    bob_token = gw.get_temporary_token("bob", vault.acct["bob"], READ)
    claims = jwt.decode(bob_token, SIGNING_KEY, algorithms=["HS256"], audience="autotrade-broker-gateway",
                        options={"verify_exp": False, "verify_iat": False})  # fmt: skip
    forged = jwt.encode(
        {**claims, "sub": "alice", "acct": vault.acct["alice"]}, os.urandom(32), algorithm="HS256"
    )
    with pytest.raises(AccessDenied):
        await gw.session(forged, origin="test")
    with vault.db.unit_of_work() as s:
        refused = s.scalars(sa.select(AccessLog).where(AccessLog.allowed.is_(False))).all()
    assert len(refused) == 2 and all(r.reason for r in refused)


async def test_scope_expiry_and_revocation_are_checked_on_every_request(vault: Vault) -> None:
    gw = vault.gateway
    token = gw.get_temporary_token("alice", vault.acct["alice"], READ)
    session = await gw.session(token, origin="test")
    with pytest.raises(AccessDenied, match="does not allow order:buy"):
        await session.buy("005930", 1, 50_000, TradeType.LIMIT)
    gw.tokens.revoke(token)
    with pytest.raises(AccessDenied, match="revoked"):
        await session.deposit()
    short = await gw.session(gw.get_temporary_token("bob", vault.acct["bob"], READ), origin="test")
    vault.sim.admin.advance(gw.tokens.ttl.total_seconds() + 1)
    with pytest.raises(AccessDenied, match="expired"):
        await short.deposit()


async def test_a_buy_counts_once_against_the_daily_limit(vault: Vault) -> None:
    gw = vault.gateway
    session = await gw.session(gw.get_temporary_token("alice", vault.acct["alice"], TRADE), origin="test")
    await session.buy("005930", 12, 50_000, TradeType.LIMIT)  # 600,000 of a 1,000,000 limit
    assert vault.status("alice", vault.acct["alice"]) is ApiStatus.ACTIVE
    with pytest.raises(AccessDenied, match="daily limit"):
        await session.buy("005930", 10, 50_000, TradeType.LIMIT)  # 1,100,000 in total
    # A limit breach is high risk: the key is disabled, the broker token revoked, the operator told.
    assert vault.status("alice", vault.acct["alice"]) is ApiStatus.DISABLED
    assert [a.rule for a in vault.alerts] == ["limit_breach"]
    broker_tokens = {t.appkey for t in vault.sim.engine.tokens.values()}
    assert vault.keys["alice"]["appkey"] not in broker_tokens
    # The key keeps its sell-only scope (reads to reconcile, sells of the product's positions): no buy.
    with pytest.raises(AccessDenied, match="DISABLED"):
        await session.buy("005930", 1, 50_000, TradeType.LIMIT)
    # Bob is untouched.
    bob = await gw.session(gw.get_temporary_token("bob", vault.acct["bob"], TRADE), origin="test")
    assert (await bob.buy("005930", 1, 50_000, TradeType.LIMIT)).order_no


async def test_a_buy_that_did_not_reach_the_broker_does_not_count(vault: Vault) -> None:
    """A buy the broker refused, or never received, is sent again or not at all: it must not count against
    the day's limit (or the token's cap), else the re-send looks like a breach and the key is cut off."""
    from autotrade.broker.errors import BrokerError

    gw = vault.gateway
    account = vault.acct["alice"]
    session = await gw.session(gw.get_temporary_token("alice", account, TRADE, 1_300_000), origin="test")
    vault.sim.admin.add_fault("http_429", path="/api/dostk/ordr", count=20)  # never received, every attempt
    with pytest.raises(BrokerError):
        await session.buy("005930", 12, 50_000, TradeType.LIMIT)  # 600,000 of the 1,000,000 limit
    vault.sim.admin.clear_faults()
    with pytest.raises(BrokerError):  # the broker refuses an unknown stock
        await session.buy("999990", 12, 50_000, TradeType.LIMIT)
    assert (await session.buy("005930", 12, 50_000, TradeType.LIMIT)).order_no  # the re-send: 600,000
    assert vault.status("alice", account) is ApiStatus.ACTIVE and vault.alerts == []
    with vault.db.unit_of_work() as s:
        reasons = s.scalars(
            sa.select(AccessLog.reason)
            .where(AccessLog.action == "order:buy", AccessLog.account_no == account)
            .order_by(AccessLog.id)
        ).all()
    assert [r.split(":")[0] if r else None for r in reasons] == ["not placed", "not placed", None]
    # What did reach the broker still counts.
    with pytest.raises(AccessDenied, match="daily limit"):
        await session.buy("005930", 9, 50_000, TradeType.LIMIT)


async def test_a_proven_re_send_counts_once(vault: Vault) -> None:
    """A buy of unknown outcome (a 500 on the order) keeps counting: it may be at the broker. When the order
    protocol has proved it never arrived and sends the intent again, the earlier call stops counting; a call
    that succeeded is never superseded, whatever reference is given."""
    from autotrade.broker.errors import BrokerError
    from autotrade.trading.ports import ORDER_REF, OrderRef

    gw = vault.gateway
    account = vault.acct["alice"]
    session = await gw.session(gw.get_temporary_token("alice", account, TRADE), origin="test")
    ORDER_REF.set(OrderRef("2026-11-24|alice|005930|BUY"))
    vault.sim.admin.add_fault("http_500", path="/api/dostk/ordr", count=1)
    with pytest.raises(BrokerError, match="UNKNOWN"):
        await session.buy("005930", 12, 50_000, TradeType.LIMIT)  # 600,000 of the 1,000,000 limit
    ORDER_REF.set(OrderRef("2026-11-24|alice|000660|BUY"))
    with pytest.raises(AccessDenied, match="daily limit"):  # counted: it may have reached the broker
        await session.buy("000660", 5, 100_000, TradeType.LIMIT)
    gw.keys.set_status("alice", account, ApiStatus.ACTIVE)  # the breach above cut the key off; restore it
    session = await gw.session(gw.get_temporary_token("alice", account, TRADE), origin="test")
    ORDER_REF.set(OrderRef("2026-11-24|alice|005930|BUY", resend=True))
    assert (await session.buy("005930", 12, 50_000, TradeType.LIMIT)).order_no  # the proven re-send
    ORDER_REF.set(OrderRef("2026-11-24|alice|000660|BUY", resend=True))
    assert (await session.buy("000660", 3, 100_000, TradeType.LIMIT)).order_no  # 900,000 in all
    with pytest.raises(AccessDenied, match="daily limit"):  # the same intent again: the success counts
        await session.buy("000660", 3, 100_000, TradeType.LIMIT)


async def test_a_buy_whose_process_died_before_the_broker_answered_counts_once(vault: Vault) -> None:
    """The gateway admitted a buy (600,000 of the 1,000,000 limit) and the process died before the broker
    call returned: nothing recorded its outcome. The order protocol proves it never arrived and sends it
    again: the dead call stops counting, so the re-send is within the limit and the key stays ACTIVE (it
    counted twice and the limit breach disabled the key)."""
    from autotrade.trading.ports import ORDER_REF, OrderRef

    gw = vault.gateway
    account = vault.acct["alice"]
    session = await gw.session(gw.get_temporary_token("alice", account, TRADE), origin="test")
    ORDER_REF.set(OrderRef("2026-11-24|alice|005930|BUY"))
    await gw._admit(session.claims, "order:buy", "test", 600_000)  # admitted; the process dies here
    ORDER_REF.set(OrderRef("2026-11-24|alice|005930|BUY", resend=True))
    assert (await session.buy("005930", 12, 50_000, TradeType.LIMIT)).order_no  # the proven re-send
    assert vault.status("alice", account) is ApiStatus.ACTIVE and vault.alerts == []
    ORDER_REF.set(OrderRef("2026-11-24|alice|000660|BUY"))
    with pytest.raises(AccessDenied, match="daily limit"):  # the re-send itself counts: 600,000 + 500,000
        await session.buy("000660", 5, 100_000, TradeType.LIMIT)


async def test_the_spending_cap_of_a_token(vault: Vault) -> None:
    gw = vault.gateway
    session = await gw.session(
        gw.get_temporary_token("bob", vault.acct["bob"], TRADE, 120_000), origin="test"
    )
    await session.buy("005930", 2, 50_000, TradeType.LIMIT)
    with pytest.raises(AccessDenied, match="cap"):
        await session.buy("005930", 1, 50_000, TradeType.LIMIT)


async def test_a_burst_kills_the_key_within_a_minute(vault: Vault) -> None:
    """Burst threshold 10 requests a minute: the session is request 1, deposits 1-9 are requests 2-10; the
    10th deposit (request 11) is the first offending request. It is refused, and by the time its answer is
    back the key is DISABLED in the database and the broker token is gone at the broker: the minute is
    measured from sending that request to seeing both, not inside ``kill()``."""
    gw = vault.gateway
    gw.detector = AnomalyDetector(AnomalySettings(burst_requests=10, burst_window_seconds=60))
    session = await gw.session(gw.get_temporary_token("alice", vault.acct["alice"], READ), origin="test")
    loop = asyncio.get_running_loop()
    for _ in range(9):
        await session.deposit()
    appkey = vault.keys["alice"]["appkey"]
    assert any(t.appkey == appkey for t in vault.sim.engine.tokens.values())  # a live broker token
    assert vault.status("alice", vault.acct["alice"]) is ApiStatus.ACTIVE
    first_bad = loop.time()
    with pytest.raises(AccessDenied, match="burst"):
        await session.deposit()
    assert vault.status("alice", vault.acct["alice"]) is ApiStatus.DISABLED
    assert not any(t.appkey == appkey for t in vault.sim.engine.tokens.values())
    assert loop.time() - first_bad < 60
    with vault.db.unit_of_work() as s:
        events = s.scalars(sa.select(SecurityEvent)).all()
    assert [(e.user_id, e.rule) for e in events] == [("alice", "burst")]
    alerted = [(a.user_id, a.account_no, a.rule) for a in vault.alerts]
    assert alerted == [("alice", vault.acct["alice"], "burst")]


async def test_a_market_buy_is_checked_against_one_shared_quote(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autotrade.vault.gateway import GatedSession

    calls: list[str] = []
    real = GatedSession.quote

    async def counted(self: GatedSession, code: str) -> Any:
        calls.append(code)
        return await real(self, code)

    monkeypatch.setattr(GatedSession, "quote", counted)
    gw = vault.gateway
    for user, account in (("alice", vault.acct["alice"]), ("bob", vault.acct["bob"])):
        session = await gw.session(gw.get_temporary_token(user, account, TRADE), origin="test")
        await session.buy("000660", 1, None, TradeType.MARKET)
        await session.buy("000660", 1, None, TradeType.MARKET)
    assert calls == ["000660"]
    with vault.db.unit_of_work() as s:
        amounts = s.scalars(sa.select(AccessLog.amount).where(AccessLog.action == "order:buy")).all()
    assert len(amounts) == 4 and len(set(amounts)) == 1 and amounts[0] > 0

    # Buys of the same stock at the same moment (the evening run) wait for one quote; should the fetching
    # user's request fail, the others ask for themselves.
    calls.clear()
    gw._quotes.clear()
    sessions = [
        await gw.session(gw.get_temporary_token(u, vault.acct[u], TRADE), origin="test")
        for u in ("alice", "bob")
    ]
    await asyncio.gather(*(s.buy("005930", 1, None, TradeType.MARKET) for s in sessions * 3))
    assert calls == ["005930"]
    gw._quotes.clear()
    calls.clear()
    gw.keys.set_status("alice", vault.acct["alice"], ApiStatus.INACTIVE)
    outcomes = await asyncio.gather(
        sessions[0].buy("005930", 1, None, TradeType.MARKET),
        sessions[1].buy("005930", 1, None, TradeType.MARKET),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], AccessDenied) and not isinstance(outcomes[1], BaseException)
    assert calls == ["005930", "005930"]


@pytest.mark.parametrize("kms_kind", ["local", "aws"])
async def test_decrypt_runs_once_per_user_per_day(
    sim: RunningSimulator, db_url: str, tmp_path: Path, kms_kind: str, request: pytest.FixtureRequest
) -> None:
    inner: KmsProvider = LocalKms(tmp_path / "master.key")
    if kms_kind == "aws":
        inner = _moto_kms(request)
    v = await make_vault(sim, db_url, inner)
    try:
        # Start the day cold: no broker token cached in this process or in the database.
        with v.db.unit_of_work() as s:
            s.execute(sa.delete(BrokerTokenCache))
        gw = BrokerGateway(v.db, KeyStore(v.db, v.kms), v.gateway.client, v.gateway.tokens,
                           cache_key=CACHE_KEY, clock=sim.engine.read_clock)  # fmt: skip
        before = v.kms.calls["Decrypt"]
        for _ in range(20):
            for user in ("alice", "bob"):
                session = await gw.session(gw.get_temporary_token(user, v.acct[user], READ), origin="test")
                await session.deposit()
        assert v.kms.calls["Decrypt"] - before == 2  # 40 sessions, 80 requests: one Decrypt per user
        # A second gateway process shares the sealed token cache in the database: no Decrypt either.
        other = BrokerGateway(v.db, KeyStore(v.db, v.kms), gw.client, gw.tokens, cache_key=CACHE_KEY,
                              clock=sim.engine.read_clock)  # fmt: skip
        session = await other.session(
            other.get_temporary_token("alice", v.acct["alice"], READ), origin="test"
        )
        await session.deposit()
        assert v.kms.calls["Decrypt"] - before == 2
    finally:
        await v.gateway.client.aclose()
        v.db.dispose()


def _moto_kms(request: pytest.FixtureRequest) -> KmsProvider:
    import boto3

    from autotrade.vault.kms import AwsKms

    mp = request.getfixturevalue("monkeypatch")
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    url = request.getfixturevalue("moto_kms_url")
    client = boto3.client("kms", region_name="ap-northeast-2", endpoint_url=url)
    key_id = client.create_key(Description="autotrade gateway test")["KeyMetadata"]["KeyId"]
    return AwsKms(key_id, region="ap-northeast-2", endpoint_url=url)


async def test_no_secret_in_the_database_or_the_logs(vault: Vault, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gw = vault.gateway
    session = await gw.session(gw.get_temporary_token("bob", vault.acct["bob"], TRADE), origin="test")
    await session.buy("005930", 1, 50_000, TradeType.LIMIT)
    await session.holdings()
    gw.tokens.revoke(gw.get_temporary_token("bob", vault.acct["bob"], READ))
    secrets = [k["appkey"] for k in vault.keys.values()] + [k["secretkey"] for k in vault.keys.values()]
    secrets += [t.value for t in vault.sim.engine.tokens.values()]
    assert len(secrets) >= 5
    dump: list[str] = []
    with vault.db.engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                dump += [v.hex() if isinstance(v, bytes) else str(v) for v in row]
    assert len(dump) > 20
    text = "\n".join(dump) + "\n".join(r.getMessage() for r in caplog.records)
    assert not [s for s in secrets if s in text], "a secret is stored or logged in clear"
    assert "GatedSession(user='bob'" in repr(session) and "secret" not in repr(gw).lower()
