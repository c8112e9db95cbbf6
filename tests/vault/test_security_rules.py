"""The gateway's security rules graded by what a request does, on SQLite and PostgreSQL, against the
simulator over real HTTP: normal use at odd hours (a 20:00 strategies view, a 19:00 report re-run, a
Sunday retry) keeps the key ACTIVE; an off-hours buy is held back without cutting the user off; a burst
split over two OS processes still trips the kill switch within the minute; a disabled key still sells what
the product holds (and nothing else); an operator brings it back by CLI or API, and the user hears both;
deleting a key lists the positions it leaves unmanaged."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from typer.testing import CliRunner

from autotrade.access import GatewayAccess
from autotrade.api.app import create_app
from autotrade.api.auth import hash_password
from autotrade.api.service import build_deps
from autotrade.broker import TradeType
from autotrade.broker.errors import BrokerError
from autotrade.config import Settings
from autotrade.domain.exits import StrategyStatus
from autotrade.domain.krx import KST
from autotrade.domain.models import ApiStatus
from autotrade.notify.model import Notification
from autotrade.runtime import READ, SELL, TRADE, Runtime, ShiftedClock, set_runtime
from autotrade.sim.server import RunningSimulator, running_simulator
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import AccessLog, SecurityEvent, ThreeTierStrategy, User, UserApiKey
from autotrade.trading.buys import AccountRef
from autotrade.vault.anomaly import AlertEvent, Grade, SecurityAlert
from autotrade.vault.gateway import AccessDenied, BrokerGateway
from autotrade.vault.notices import security_notices
from autotrade.vault.registration import register_user_api

START = datetime(2026, 11, 24, 10, 0, tzinfo=KST)  # a Tuesday, market open
SUNDAY = datetime(2026, 11, 29, 10, 0, tzinfo=KST)
PASSWORD = "correct horse battery"
SAMSUNG, HYNIX = "005930", "000660"


class Dispatcher:
    """The runtime's dispatcher with the channels left out: what would be delivered, in order."""

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    def dispatch(self, notification: Notification) -> None:
        self.sent.append(notification)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def to_user(self, user: str) -> list[Notification]:
        return [n for n in self.sent if n.audience.user_id == user]

    def to_operator(self) -> list[Notification]:
        return [n for n in self.sent if n.audience.is_operator]


@dataclass
class World:
    sim: RunningSimulator
    cfg: Settings
    db: Database
    access: GatewayAccess
    rt: Runtime
    gw: BrokerGateway
    notices: Dispatcher
    alerts: list[SecurityAlert] = field(default_factory=list)
    acct: dict[str, str] = field(default_factory=dict)

    def at(self, moment: datetime) -> None:
        self.sim.engine.set_time(moment)

    def status(self, user: str) -> ApiStatus:
        with self.db.unit_of_work() as s:
            return s.scalars(sa.select(UserApiKey.api_status).where(UserApiKey.user_id == user)).one()

    def events(self, user: str) -> list[tuple[str, str]]:
        with self.db.unit_of_work() as s:
            rows = s.execute(
                sa.select(SecurityEvent.rule, SecurityEvent.severity)
                .where(SecurityEvent.user_id == user)
                .order_by(SecurityEvent.id)
            ).all()
        return [(r.rule, r.severity) for r in rows]

    async def session(self, user: str, actions: frozenset[str], origin: str = "test") -> Any:
        token = self.gw.get_temporary_token(user, self.acct[user], actions)
        return await self.gw.session(token, origin=origin)

    def hold(self, user: str, code: str, held: int) -> None:
        """The product's open position (an armed three-tier strategy) of ``held`` shares."""
        with self.db.unit_of_work() as s:
            s.add(ThreeTierStrategy(
                user_id=user, account_no=self.acct[user], buy_intent_key=f"{user}-{code}", code=code,
                name=code, quantity=held, entry_price=50_000, entry_date=START.date(),
                stop_loss_price=47_500, preserve_price=52_000, take_profit_price=54_000, held_quantity=held,
                preserve_target=held // 2, status=StrategyStatus.ACTIVE, armed_at=START,
            ))  # fmt: skip

    def can_log_in(self, user: str, role: str = "user") -> None:
        with self.db.unit_of_work() as s:
            s.execute(sa.update(User).where(User.user_id == user).values(
                email=f"{user}@example.com", password_hash=hash_password(PASSWORD), role=role))  # fmt: skip


def settings_for(sim: RunningSimulator, db_url: str, data_dir: Path, **rules: Any) -> Settings:
    return Settings(
        database_url=db_url, data_dir=data_dir, broker_base_url=sim.base_url, origin="test",
        local_master_key_path=data_dir / "master.key", broker_rate_per_second=500.0, broker_burst=500,
        temp_token_ttl_seconds=8 * 3600, **rules,
    )  # fmt: skip


@pytest.fixture
async def world(db_url: str, tmp_path: Path) -> AsyncIterator[World]:
    with running_simulator(seed=11, start=START) as sim:
        sim.admin.add_stocks([{"code": SAMSUNG, "name": "삼성전자", "prev_close": 50_000},
                              {"code": HYNIX, "name": "SK하이닉스", "prev_close": 100_000}])  # fmt: skip
        upgrade(db_url)
        db = Database(db_url)
        cfg = settings_for(sim, db_url, tmp_path)
        notices = Dispatcher()
        alerts: list[SecurityAlert] = []
        to_notices = security_notices(notices.dispatch)

        def sink(alert: SecurityAlert) -> None:
            alerts.append(alert)
            to_notices(alert)

        # Wired as build_runtime wires it: the gateway's alerts go to the runtime's dispatcher.
        access = GatewayAccess(cfg, db, sink, clock=sim.engine.read_clock)
        rt = Runtime(cfg, db, sim.engine.read_clock, access, notifier=notices)
        w = World(sim, cfg, db, access, rt, access.gateway(), notices, alerts)
        for n, user in enumerate(["alice", "bob"], start=1):
            account = f"{5_300_000_000 + n:010d}"
            sim.admin.create_account(account, user, 50_000_000)
            key = sim.admin.create_appkey(account)
            await register_user_api(w.gw, user, SecretStr(key["appkey"]), SecretStr(key["secretkey"]),
                                    account, daily_limit=5_000_000)  # fmt: skip
            w.acct[user] = account
        set_runtime(rt)
        try:
            yield w
        finally:
            set_runtime(None)
            await access.aclose()
            db.dispose()


def api_client(w: World) -> httpx.AsyncClient:
    app = create_app(build_deps(w.rt))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


async def login(client: httpx.AsyncClient, user: str) -> dict[str, str]:
    r = await client.post("/api/auth/login", json={"email": f"{user}@example.com", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


# --- normal use at odd hours ---


async def test_a_strategies_view_at_20h_keeps_the_key_active(world: World) -> None:
    """The view looks the current price up through the gateway with the user's own key: a read, which no
    time rule grades. (Before: "off_hours", high, the key disabled.)"""
    world.hold("alice", SAMSUNG, 10)
    world.can_log_in("alice")
    world.at(START.replace(hour=20))
    async with api_client(world) as client:
        r = await client.get("/api/auto-trading/three-tier-strategies", headers=await login(client, "alice"))
    assert r.status_code == 200, r.text
    [strategy] = r.json()["active_strategies"]
    assert strategy["code"] == SAMSUNG and strategy["current_price"] is not None  # it went to the broker
    assert world.status("alice") is ApiStatus.ACTIVE
    assert world.events("alice") == [] and world.notices.sent == []


async def test_a_daily_report_rerun_at_19h_keeps_the_key_active(world: World) -> None:
    """The report's equity snapshot (the real task) reads balances and prices at 19:00."""
    from tasks.reports import snapshot_equity

    world.at(START.replace(hour=19))
    await snapshot_equity.fn([("alice", world.acct["alice"])], START.date())
    with world.db.unit_of_work() as s:
        cash = s.scalar(sa.text("SELECT cash FROM equity_snapshots WHERE account_no = :a"),
                        {"a": world.acct["alice"]})  # fmt: skip
    assert cash == 50_000_000
    assert world.status("alice") is ApiStatus.ACTIVE and world.events("alice") == []


async def test_a_sunday_retry_keeps_the_key_active(world: World) -> None:
    """A retry on Sunday of Friday's reconciliation (reads) and of the evening buys: six buys are held back
    (one STEP_UP event and one operator alert for the key, not six), none counts as a failed check, so the
    five-refusal rule does not fire, and the key stays ACTIVE."""
    from tasks.trading import reconcile_positions

    world.at(SUNDAY)
    friday = date(2026, 11, 27)
    passed = await reconcile_positions.fn(friday, ["alice"])  # the watch's reconciliation, as it runs
    assert passed == {"accounts": 1, "with_errors": 0}, passed
    session = await world.session("alice", TRADE)
    for _ in range(6):
        with pytest.raises(AccessDenied, match="held: blocked by security rule off_hours"):
            await session.buy(SAMSUNG, 1, 50_000, TradeType.LIMIT)
    assert world.status("alice") is ApiStatus.ACTIVE
    assert world.events("alice") == [("off_hours", "step_up")]
    assert [(a.event, a.rule, a.grade) for a in world.alerts] == [
        (AlertEvent.FINDING, "off_hours", Grade.STEP_UP)
    ]
    assert world.notices.to_user("alice") == []  # the user is not alarmed; the operator is
    assert len(world.notices.to_operator()) == 1
    with world.db.unit_of_work() as s:
        refused = s.scalars(sa.select(AccessLog.reason).where(
            AccessLog.account_no == world.acct["alice"], AccessLog.allowed.is_(False))).all()  # fmt: skip
    assert len(refused) == 6 and all(r.startswith("held: ") for r in refused)


# --- grades ---


async def test_an_off_hours_buy_is_held_back_and_a_protective_sell_is_not(world: World) -> None:
    """At 10:00 a buy goes through. At 20:00 the same buy is refused (STEP_UP: the operator alerted, the
    key ACTIVE) and does not count against the day's spending, while a sell of the product's position is
    not refused by the time rule (RECORD). An unknown origin may read (ALERT) but not buy (STEP_UP)."""
    session = await world.session("alice", TRADE)
    assert (await session.buy(SAMSUNG, 2, 50_000, TradeType.LIMIT)).order_no  # 100,000 at 10:00
    reader = await world.session("alice", READ, origin="curl")
    assert (await reader.deposit()).orderable > 0
    buyer = await world.session("bob", TRADE, origin="curl")
    with pytest.raises(AccessDenied, match="held: blocked by security rule unknown_origin"):
        await buyer.buy(SAMSUNG, 1, 50_000, TradeType.LIMIT)

    world.hold("alice", SAMSUNG, 2)
    world.at(START.replace(hour=20))
    session = await world.session("alice", TRADE)
    with pytest.raises(AccessDenied, match="held: blocked by security rule off_hours"):
        await session.buy(SAMSUNG, 1, 50_000, TradeType.LIMIT)
    with contextlib.suppress(BrokerError):  # the gateway lets it through; the broker refuses it off-session
        await session.sell(SAMSUNG, 2, None, TradeType.MARKET)
    assert world.status("alice") is ApiStatus.ACTIVE and world.status("bob") is ApiStatus.ACTIVE
    assert world.events("alice") == [
        ("unknown_origin", "alert"), ("off_hours", "step_up"), ("off_hours", "record")
    ]
    assert world.events("bob") == [("unknown_origin", "alert"), ("unknown_origin", "step_up")]  # session, buy
    with world.db.unit_of_work() as s:
        spent = s.scalar(sa.select(sa.func.sum(AccessLog.amount)).where(
            AccessLog.account_no == world.acct["alice"], AccessLog.action == "order:buy",
            AccessLog.allowed.is_(True)))  # fmt: skip
        sells = s.scalars(sa.select(AccessLog.allowed).where(
            AccessLog.account_no == world.acct["alice"], AccessLog.action == "order:sell")).all()  # fmt: skip
    assert spent == 100_000  # 2 x 50,000 at 10:00; the held-back buy is not among the allowed ones
    assert sells == [True]


# --- a burst over two processes ---


def _burst_worker(cfg: Settings, clock: ShiftedClock, user: str, account: str, requests: int,
                  start: Any, out: Any) -> None:  # fmt: skip
    """Another gateway process: the same database and keys, its own gateway (built from the settings as
    GatewayAccess builds it); ``requests`` requests as fast as it can, after the other process is ready."""

    async def run() -> list[str]:
        db = Database(cfg.database_url)
        access = GatewayAccess(cfg, db, clock=clock)
        gw = access.gateway()
        outcomes: list[str] = []
        try:
            start.wait(60)
            token = gw.get_temporary_token(user, account, READ)
            session = await gw.session(token, origin="test")
            outcomes.append("ok")
            for _ in range(requests - 1):
                try:
                    await session.deposit()
                    outcomes.append("ok")
                except AccessDenied as exc:
                    outcomes.append(str(exc))
        finally:
            await access.aclose()
            db.dispose()
        return outcomes

    try:
        out.put(asyncio.run(run()))
    except BaseException as exc:  # the test reads it rather than waiting for a result that never comes
        out.put([f"worker failed: {type(exc).__name__}: {exc}"])
        raise


async def test_a_burst_split_over_two_processes_trips_the_switch_within_a_minute(
    world: World, tmp_path: Path
) -> None:
    """Threshold 20 requests in 60 s (the anomaly_* settings). Two OS processes send 15 requests each (a
    session and 14 deposits): neither alone is a burst, together they are. The 21st request of the account
    (by the access log's order) is the first offending one; the key is disabled, its broker token
    revoked, and the kill recorded less than 60 s after it (both on one clock, the processes share it)."""
    cfg = world.cfg.model_copy(update={"anomaly_burst_requests": 20, "anomaly_burst_window_seconds": 60.0})
    clock = ShiftedClock.starting_at(START)
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(2), ctx.Queue()
    account = world.acct["alice"]
    procs = [ctx.Process(target=_burst_worker, args=(cfg, clock, "alice", account, 15, start, out))
             for _ in range(2)]  # fmt: skip
    for p in procs:
        p.start()
    outcomes = [await asyncio.to_thread(out.get, True, 120) for _ in procs]
    for p in procs:
        await asyncio.to_thread(p.join, 30)
        assert p.exitcode == 0
    assert sorted(len(o) for o in outcomes) == [15, 15]  # neither process alone reached 21
    assert any("burst" in r for o in outcomes for r in o)
    assert world.status("alice") is ApiStatus.DISABLED
    with world.db.unit_of_work() as s:
        ats = s.scalars(
            sa.select(AccessLog.at)
            .where(AccessLog.account_no == account, AccessLog.at >= START)
            .order_by(AccessLog.id)
        ).all()
        killed = s.scalars(
            sa.select(SecurityEvent.at)
            .where(SecurityEvent.user_id == "alice", SecurityEvent.rule == "burst")
            .order_by(SecurityEvent.at)
        ).all()
    assert len(ats) == 30 and killed
    first_offending = ats[20]
    assert timedelta(0) <= killed[0] - first_offending < timedelta(seconds=60)
    # Bob's key is another account's: untouched.
    assert world.status("bob") is ApiStatus.ACTIVE


# --- a disabled key's sell-only scope ---


async def test_a_disabled_key_sells_only_what_the_product_holds(world: World) -> None:
    """Alice holds 10 Samsung shares the product bought. After the kill switch: reads work, a sell of 10
    Samsung goes to the broker (reported to the operator), and so do its resting stop and the stop's modify
    and cancel; a buy, a sell of 11 and a sell or modify of a code the product does not hold are refused.
    Exits and reconciliation still list the account; buys do not."""
    session = await world.session("alice", TRADE)
    await session.buy(SAMSUNG, 10, None, TradeType.MARKET)
    world.hold("alice", SAMSUNG, 10)
    with world.db.unit_of_work() as s:
        s.execute(sa.update(UserApiKey).values(is_auto_trading_enabled=True))
    alice = AccountRef("alice", world.acct["alice"])
    assert alice in world.rt.accounts() and alice in world.rt.accounts(trading_only=False)

    await world.gw.kill("alice", world.acct["alice"], "burst", "test")
    assert world.status("alice") is ApiStatus.DISABLED
    assert alice not in world.rt.accounts()  # no buys
    assert alice in world.rt.accounts(trading_only=False)  # exits and reconciliation

    seller = await world.session("alice", TRADE)
    held = {h.code: h.quantity for h in (await seller.holdings()).holdings}
    assert held.get(SAMSUNG) == 10
    with pytest.raises(AccessDenied, match="DISABLED: only sells"):
        await seller.buy(SAMSUNG, 1, 50_000, TradeType.LIMIT)
    with pytest.raises(AccessDenied, match="DISABLED: order:sell of 11 exceeds the 10 shares"):
        await seller.sell(SAMSUNG, 11, None, TradeType.MARKET)
    with pytest.raises(AccessDenied, match=f"DISABLED: the product holds no open position in {HYNIX}"):
        await seller.sell(HYNIX, 1, None, TradeType.MARKET)
    # Its resting stop (a stop-limit sell at the broker) can still be shrunk and withdrawn, as exits need.
    stop = await seller.sell(SAMSUNG, 10, 47_000, TradeType.STOP_LIMIT, stop_price=47_500)
    with pytest.raises(AccessDenied, match=f"no open position in {HYNIX}"):
        await seller.modify(stop.order_no, HYNIX, 5, 47_000, stop_price=47_500)
    shrunk = await seller.modify(stop.order_no, SAMSUNG, 5, 47_000, stop_price=47_500)
    for order_no in (shrunk.order_no, stop.order_no):  # the modified 5 and the 5 left on the original
        await seller.cancel(order_no, SAMSUNG)
    ack = await seller.sell(SAMSUNG, 10, None, TradeType.MARKET)
    assert ack.order_no
    assert [(a.event, a.rule) for a in world.alerts] == [
        (AlertEvent.DISABLED, "burst"), (AlertEvent.FINDING, "sell_only_scope"),
        (AlertEvent.FINDING, "sell_only_scope"),
    ]  # fmt: skip
    assert ("sell_only_scope", "alert") in world.events("alice")

    # The position closes: nothing left to protect, the disabled key leaves the exits' list.
    with world.db.unit_of_work() as s:
        s.execute(sa.update(ThreeTierStrategy).values(held_quantity=0, closed_at=datetime.now(UTC),
                                                      status=StrategyStatus.STOPPED))  # fmt: skip
    assert alice not in world.rt.accounts(trading_only=False)
    with pytest.raises(AccessDenied, match="no open position"):
        await seller.sell(SAMSUNG, 1, None, TradeType.MARKET)


# --- the way back, and deletion ---


async def test_the_operator_re_enables_by_cli_and_api_and_the_user_is_told(world: World) -> None:
    """Disabled by a real burst (threshold 5); re-enabled by the CLI: ACTIVE, and the burst that caused
    the kill does not count again. Disabled again; the API refuses a user (403), re-enables for the
    operator. The user was told each time: disabled (what still runs, the way back), then enabled."""
    from autotrade.cli import app as cli
    from autotrade.vault.anomaly import AnomalyDetector, AnomalySettings

    world.hold("alice", SAMSUNG, 3)
    world.gw.detector = AnomalyDetector(AnomalySettings(burst_requests=5, burst_window_seconds=600))
    session = await world.session("alice", READ)
    with pytest.raises(AccessDenied, match="burst"):
        for _ in range(10):
            await session.deposit()
    assert world.status("alice") is ApiStatus.DISABLED
    disabled = world.notices.to_user("alice")
    assert [n.title for n in disabled] == ["API 키가 보안 규칙으로 비활성화되었습니다"]
    assert any("005930 x3" in line for line in disabled[0].lines)
    assert any("복구 방법" in line for line in disabled[0].lines)

    result = CliRunner().invoke(cli, ["admin", "enable-key", "alice", world.acct["alice"], "--by", "ops"])
    assert result.exit_code == 0, result.output
    assert world.status("alice") is ApiStatus.ACTIVE
    assert world.notices.to_user("alice")[-1].title == "API 키가 다시 활성화되었습니다"
    for _ in range(3):  # within the same 600 s window: the windows restarted at the re-enable
        await (await world.session("alice", READ)).deposit()
    assert world.status("alice") is ApiStatus.ACTIVE
    again = CliRunner().invoke(cli, ["admin", "enable-key", "alice", "0000000000"])
    assert again.exit_code == 1

    await world.gw.kill("alice", world.acct["alice"], "repeated_failures", "test")
    world.can_log_in("alice")
    world.can_log_in("bob", role="operator")
    async with api_client(world) as client:
        url = f"/api/admin/api-keys/alice/{world.acct['alice']}/enable"
        assert (await client.post(url, headers=await login(client, "alice"))).status_code == 403
        r = await client.post(url, headers=await login(client, "bob"))
    assert r.status_code == 200, r.text
    assert r.json()["api_status"] == "ACTIVE" and world.status("alice") is ApiStatus.ACTIVE
    titles = [n.title for n in world.notices.to_user("alice")]
    assert titles == ["API 키가 보안 규칙으로 비활성화되었습니다", "API 키가 다시 활성화되었습니다"] * 2
    enables = [e for e in world.events("alice") if e[0] == "operator_enable"]
    assert enables == [("operator_enable", "record")] * 2


async def test_deleting_a_key_lists_the_positions_it_leaves_unmanaged(world: World) -> None:
    """A deleted key is crypto-shredded: it cannot sell, so its open positions are no longer managed, and
    the user reads which in the answer and in the notice."""
    world.hold("alice", SAMSUNG, 7)
    world.can_log_in("alice")
    async with api_client(world) as client:
        me = await login(client, "alice")
        r = await client.delete(f"/api/user/api-key/{world.acct['alice']}", headers=me)
    assert r.status_code == 200, r.text
    assert r.json()["unmanaged_positions"] == ["005930 x7"]
    [notice] = world.notices.to_user("alice")
    assert any("005930 x7" in line and "더 이상 자동으로 관리되지 않습니다" in line for line in notice.lines)
    assert AccountRef("alice", world.acct["alice"]) not in world.rt.accounts(trading_only=False)
    with pytest.raises(AccessDenied, match="DELETED"):
        await world.session("alice", SELL)


async def test_a_key_registered_again_after_a_kill_starts_with_clean_windows(world: World) -> None:
    """Killed at 10:00:00; four buys refused by the sell-only scope at 10:00:01. At 10:00:02 the user
    registers a new key for the account: ACTIVE. At 10:00:03 one out-of-scope request is refused: had the
    disabled key's four refusals still counted, it would be the fifth in five minutes and a kill."""
    from autotrade.api.service import GatewayRegistrar

    account = world.acct["alice"]
    await world.gw.kill("alice", account, "burst", "test")
    world.sim.engine.advance(1)
    session = await world.session("alice", TRADE)
    for _ in range(4):
        with pytest.raises(AccessDenied, match="DISABLED"):
            await session.buy(SAMSUNG, 1, 50_000, TradeType.LIMIT)
    world.sim.engine.advance(1)
    key = world.sim.admin.create_appkey(account)
    await GatewayRegistrar(world.rt).register(
        "alice", SecretStr(key["appkey"]), SecretStr(key["secretkey"]), account, 5_000_000
    )
    assert world.status("alice") is ApiStatus.ACTIVE
    world.sim.engine.advance(1)
    reader = await world.session("alice", READ)
    with pytest.raises(AccessDenied, match="token does not allow order:buy"):
        await reader.buy(SAMSUNG, 1, 50_000, TradeType.LIMIT)
    assert world.status("alice") is ApiStatus.ACTIVE
    assert [rule for rule, _ in world.events("alice")] == ["burst"]
