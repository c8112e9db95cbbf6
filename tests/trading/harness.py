"""Drives the trading services through simulated KRX days against the simulator over real HTTP.

The services are the production ones (:class:`~autotrade.runtime.Runtime`), and so are the tasks that drive
them: the evening buys and fill confirmation are ``tasks.trading``'s (``place_buy_orders``,
``confirm_fills``), a fired sell goes through ``tasks.exits.send_sell`` and a trading session is
``tasks.exits.watch_prices`` over the simulator's real-time feed. How a task reaches a broker
account is chosen per world: ``"direct"`` (the default) is a token manager per account reading the sealed
key through the key store; ``"gateway"`` is the production :class:`~autotrade.access.GatewayAccess`
(users registered through the vault, temporary tokens, the gateway's checks and access log, the sealed
broker-token cache). The virtual clock is the simulator's: prices move and orders match as the test
advances it through the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple

import sqlalchemy as sa
from pydantic import SecretStr

from autotrade.access import GatewayAccess, WebSocketPrices
from autotrade.broker import Credentials, KiwoomClient, KiwoomSession, TokenManager, WebSocketPriceFeed
from autotrade.broker.fallback import FeedSwitch
from autotrade.broker.messages import Quote
from autotrade.config import Settings
from autotrade.demo.stack import SimulatedTime
from autotrade.domain.calendar import hours_of, next_trading_day
from autotrade.domain.krx import KST
from autotrade.domain.models import ScanRow
from autotrade.runtime import SELL, PriceSource, Runtime, set_runtime
from autotrade.sim.server import RunningSimulator
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import ScanBatch, UserApiKey
from autotrade.trading.buys import AccountRef
from autotrade.trading.exit_engine import PendingSell
from autotrade.trading.kiwoom_port import KiwoomAccount
from autotrade.trading.orders import CrashHook
from autotrade.trading.ports import AccountBroker
from autotrade.trading.reconcile import ReconcileReport
from autotrade.vault.gateway import BrokerGateway
from autotrade.vault.keys import KeyStore
from autotrade.vault.kms import LocalKms
from autotrade.vault.registration import register_user_api
from tasks import exits as exit_tasks
from tasks import trading as trading_tasks
from tasks.common import RETRY, TRANSIENT

TRANSIENT_NAMES = {e.__name__ for e in TRANSIENT}

AccessKind = Literal["direct", "gateway"]


class DirectAccess:
    """BrokerAccess for engine tests: one Kiwoom session per account, keys opened through the key store; the
    price feed logs in with ``price_account``'s key."""

    def __init__(
        self,
        sim: RunningSimulator,
        keys: KeyStore,
        timeout: float = 10.0,
        *,
        price_account: AccountRef | None = None,
    ) -> None:
        self.sim = sim
        self.keys = keys
        self.timeout = timeout
        self.price_account = price_account
        self._clients: dict[int, KiwoomClient] = {}
        self._sessions: dict[tuple[int, str], KiwoomSession] = {}

    def _client(self) -> KiwoomClient:
        loop = id(asyncio.get_running_loop())
        if loop not in self._clients:
            self._clients[loop] = KiwoomClient(
                self.sim.base_url,
                rate_per_second=1000,
                burst=1000,
                retry_base_delay=0.01,
                timeout=self.timeout,
            )
        return self._clients[loop]

    async def for_account(
        self, ref: AccountRef, actions: frozenset[str], spend_cap: int | None = None
    ) -> AccountBroker:
        loop = id(asyncio.get_running_loop())
        session = self._sessions.get((loop, ref.account_no))
        if session is None:
            client = self._client()

            async def creds() -> Credentials:
                return self.keys.credentials(ref.user_id, ref.account_no)

            tokens = TokenManager(client, ref.account_no, creds, clock=self.sim.engine.now)
            session = KiwoomSession(client, ref.account_no, tokens)
            self._sessions[(loop, ref.account_no)] = session
        return KiwoomAccount(session, clock=self.sim.engine.now)

    async def price_feed(self, on_switch: Callable[[FeedSwitch], None] | None = None) -> WebSocketPrices:
        ref = self.price_account
        if ref is None:
            raise LookupError("no account to open the price feed with")

        async def creds() -> Credentials:
            return self.keys.credentials(ref.user_id, ref.account_no)

        tokens = TokenManager(self._client(), f"feed:{ref.account_no}", creds, clock=self.sim.engine.now)
        feed = WebSocketPriceFeed(self.sim.ws_url, tokens, clock=self.sim.engine.now)
        return WebSocketPrices(feed, KiwoomSession(self._client(), f"feed:{ref.account_no}", tokens))

    async def aclose(self) -> None:
        clients, self._clients, self._sessions = list(self._clients.values()), {}, {}
        for c in clients:
            await c.aclose()


class SimGatewayAccess(GatewayAccess):
    """The production access with the broker client's retry pause shortened to the direct access's: the
    virtual clock stands still while a retry waits, so a longer pause only costs wall time."""

    def gateway(self) -> BrokerGateway:
        gw = super().gateway()
        gw.client.retry_base_delay = 0.01
        return gw


class Seen(NamedTuple):
    """A tick the watch read: its trade time and price, and the virtual time it reached the exit book. The
    two differ when the watch reads behind the feed (at thousands x, a wall second is many virtual minutes),
    and what the book did with a tick depends on the second: a position closed by a fill is no longer open
    to a stop crossing that traded earlier but was read later."""

    at: datetime
    price: int
    seen: datetime


class RecordingPrices:
    """The real price source, with every tick the watch reads noted in ``seen`` (code -> path)."""

    def __init__(
        self, source: PriceSource, seen: dict[str, list[Seen]], clock: Callable[[], datetime]
    ) -> None:
        self.source = source
        self.seen = seen
        self.clock = clock

    async def subscribe(self, codes: Sequence[str]) -> None:
        await self.source.subscribe(codes)

    async def next_tick(self, wait_seconds: float) -> tuple[str, int, datetime] | None:
        tick = await self.source.next_tick(wait_seconds)
        if tick is not None:
            self.seen.setdefault(tick[0], []).append(Seen(tick[2], tick[1], self.clock()))
        return tick

    @property
    def gaps(self) -> int:
        return self.source.gaps

    async def day_range(self, code: str) -> tuple[int, int] | None:
        extremes = await self.source.day_range(code)
        if extremes is not None:  # the watch read both: a catch-up sell is judged by them
            now = self.clock()
            self.seen.setdefault(code, []).extend(Seen(now, p, now) for p in extremes)
        return extremes

    async def quote(self, code: str) -> Quote | None:
        return await self.source.quote(code)

    async def aclose(self) -> None:
        await self.source.aclose()


class Watched:
    """The world's broker access as the runtime sees it: the access itself, its price feed recorded."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def for_account(
        self, ref: AccountRef, actions: frozenset[str], spend_cap: int | None = None
    ) -> AccountBroker:
        return await self.world.access.for_account(ref, actions, spend_cap)

    async def price_feed(self, on_switch: Callable[[FeedSwitch], None] | None = None) -> PriceSource:
        feed = await self.world.access.price_feed(on_switch=on_switch)
        return RecordingPrices(feed, self.world.ticks, self.world.sim.engine.read_clock)

    async def aclose(self) -> None:
        return None  # the world closes its accesses (:meth:`World.aclose`)


@dataclass
class Trader:
    user_id: str
    account_no: str
    cash: int
    daily_limit: int

    @property
    def ref(self) -> AccountRef:
        return AccountRef(self.user_id, self.account_no)


@dataclass
class World:
    """The simulator, the database and the services, with helpers to run the daily timeline."""

    sim: RunningSimulator
    settings: Settings
    db: Database
    keys: KeyStore
    traders: list[Trader]
    crash_hook: CrashHook | None = None
    access_kind: AccessKind = "direct"
    rt: Runtime = field(init=False)
    access: DirectAccess | GatewayAccess = field(init=False)
    # How fast the simulator's clock runs while a session is watched (virtual seconds a wall second).
    watch_speed: float = 1800.0
    ticks: dict[str, list[Seen]] = field(default_factory=dict)  # code -> path seen
    buy_outcomes: list[dict[str, Any]] = field(default_factory=list)
    reports: list[ReconcileReport] = field(default_factory=list)
    _retired: list[DirectAccess | GatewayAccess] = field(default_factory=list, init=False, repr=False)
    _closing: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.access_kind == "direct":
            first = self.traders[0].ref if self.traders else None
            self.access = DirectAccess(
                self.sim, self.keys, self.settings.broker_timeout_seconds, price_account=first
            )
        self.restart()

    def restart(self) -> None:
        """A new process: fresh services over the same database and broker; the book is rebuilt from the
        database as the intraday flow does when it starts. Through the gateway the access is rebuilt too (its
        temporary tokens, memory caches and anomaly windows die with the process; the sealed broker-token
        cache in the database survives)."""
        if self.access_kind == "gateway":
            if "access" in self.__dict__:
                self._retire(self.access)
            self.access = SimGatewayAccess(self.settings, self.db, clock=self.sim.engine.now)
        self.rt = Runtime(
            self.settings, self.db, self.sim.engine.now, Watched(self),
            time_control=SimulatedTime(self.sim, self.watch_speed),
        )
        if self.crash_hook is not None:
            self.rt.orders.crash = self.crash_hook
        self.rt.engine.load()

    def _retire(self, access: DirectAccess | GatewayAccess) -> None:
        """The old process's connections close: in the background when a loop runs, else at :meth:`aclose`."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._retired.append(access)
            return
        task = loop.create_task(access.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close the access and whatever earlier processes left open."""
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        retired, self._retired = self._retired, []
        for access in [*retired, self.access]:
            await access.aclose()

    # --- clock ---

    def now(self) -> datetime:
        return self.sim.engine.now()

    def at(self, day: date, t: time) -> None:
        moment = datetime.combine(day, t, tzinfo=KST)
        if moment > self.now():
            self.sim.admin.set_clock(moment)

    # --- the timeline ---

    def prices(self) -> dict[str, int]:
        return {code: int(s["price"]) for code, s in self.sim.admin.stocks().items()}

    def scan_for(self, codes: Sequence[str], scores: Sequence[float]) -> list[ScanRow]:
        stocks = self.sim.admin.stocks()
        return [
            ScanRow(c, stocks[c]["name"], sc, int(stocks[c]["price"]), ("momentum",))
            for c, sc in zip(codes, scores, strict=True)
        ]

    async def evening(self, day: date, scan: Sequence[ScanRow]) -> list[dict[str, Any]]:
        """15:40 buys (after-hours close) by the evening flow's task, then 16:01: fills applied, positions
        opened and armed by the morning flow's ``confirm_fills``, and any sell left unsent resumed."""
        self.at(day, time(15, 40))
        batch_id = self.store_scan(day, scan)
        accounts = [(t.user_id, t.account_no) for t in self.traders]
        with self.installed():
            outs = await trading_tasks.place_buy_orders.fn(batch_id, accounts, day)
            # The chain's steps retry accounts that failed transiently (Prefect's task retries, which do not
            # run here): so does the evening, after the retry delay, for those accounts alone.
            for attempt in range(int(RETRY["retries"])):
                again = [(o["user_id"], o["account_no"]) for o in outs if o.get("error") in TRANSIENT_NAMES]
                if not again:
                    break
                self.sim.admin.set_clock(self.now() + timedelta(seconds=2 * 2**attempt))
                retried = {
                    (o["user_id"], o["account_no"]): o
                    for o in await trading_tasks.place_buy_orders.fn(batch_id, again, day)
                }
                outs = [retried.get((o["user_id"], o["account_no"]), o) for o in outs]
            self.buy_outcomes.extend(outs)
            self.at(day, time(16, 1))
            await trading_tasks.confirm_fills.fn(accounts, day)
        await self.reconcile_all(day)
        return outs

    def store_scan(self, day: date, scan: Sequence[ScanRow]) -> int:
        """The scan batch as the evening flow's validation stores it (the buys read their rows from it)."""
        import hashlib
        import json

        payload = json.dumps(
            [{"code": r.code, "name": r.name, "score": r.score, "price": r.price, "reasons": list(r.reasons)}
             for r in scan], ensure_ascii=False,
        )  # fmt: skip
        digest = hashlib.sha256(payload.encode()).hexdigest()
        with self.db.unit_of_work() as s:
            batch = s.query(ScanBatch).filter_by(trading_day=day, content_hash=digest).one_or_none()
            if batch is not None:  # the evening run again (a retry): the same batch
                return batch.id
            batch = ScanBatch(
                trading_day=day, source="harness", content_hash=digest, status="ACCEPTED",
                row_count=len(scan), report="{}", payload=payload,
            )  # fmt: skip
            s.add(batch)
            s.flush()
            return batch.id

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The world's runtime is the process's (``get_runtime``) while the tasks run."""
        set_runtime(self.rt)
        try:
            yield
        finally:
            set_runtime(None)

    async def reconcile_all(self, day: date) -> list[ReconcileReport]:
        out = []
        for t in self.traders:
            broker = await self.access.for_account(t.ref, SELL)
            report = await self.rt.reconciler.reconcile_account(t.ref, broker, day)
            for sell in report.pending_sells:
                await self.send_sell(sell, day)
            out.append(report)
        self.reports.extend(out)
        return out

    async def send_sell(self, sell: PendingSell, day: date) -> None:
        """The intraday task's ``send_sell``: the order, its fills, and the follow-up sells they arm."""
        await exit_tasks.send_sell(self.rt, sell, day)

    async def trading_session(self, day: date, *, until: time | None = None) -> dict[str, Any]:
        """09:00 to ``until`` (default the close) under the intraday flow's ``watch_prices`` task: the
        simulator's clock runs at ``watch_speed`` and its real-time feed carries the ticks through the exit
        book; the task reconciles as it goes and at its end. Returns the task's result."""
        hours = hours_of(day)
        self.at(day, hours.open)
        end = datetime.combine(day, until or hours.close, tzinfo=KST)
        try:
            with self.installed():
                result = await exit_tasks.watch_prices.fn(day, until=end)
        finally:
            self.sim.admin.set_clock(speed=0.0)
        assert "skipped" not in result, result
        return result

    def watched(self) -> set[str]:
        """The codes the exit book watches."""
        return {st.code for _, st in self.rt.engine.book}

    async def watch_once(self, day: date) -> None:
        """One tick of every watched stock at its current price, handed to the exit book and the intraday
        task's ``send_sell`` as the watch loop does (a crash in a send reaches the caller: it dies)."""
        watched = self.watched()
        if not watched:
            return
        px = self.prices()
        at = self.now()
        for code in sorted(watched):
            self.ticks.setdefault(code, []).append(Seen(at, px[code], at))
            for sell in self.rt.engine.on_price(code, px[code], at):
                await self.send_sell(sell, day)

    async def close_day(self, day: date) -> date:
        hours = hours_of(day)
        self.at(day, hours.close)
        await self.reconcile_all(day)
        self.rt.engine.day_end(self.now())
        return next_trading_day(day)


def make_world(
    sim: RunningSimulator,
    db_url: str,
    tmp: Path,
    traders: Sequence[Trader],
    *,
    access: AccessKind = "direct",
    **settings: Any,
) -> World:
    """Accounts at the simulator with their keys sealed in the database, auto-trading on. ``access="gateway"``
    registers the keys through the vault (validated with the broker, sealed by the KMS provider) and reaches
    the accounts through the gateway."""
    upgrade(db_url)
    if access == "gateway":
        settings = {"broker_base_url": sim.base_url, "broker_rate_per_second": 1000.0, "broker_burst": 1000,
                    **settings}  # fmt: skip
    cfg = Settings(database_url=db_url, data_dir=tmp, local_master_key_path=tmp / "master.key", **settings)
    db = Database(db_url)
    keys = KeyStore(db, LocalKms(cfg.local_master_key_path))
    issued = []
    for t in traders:
        sim.admin.create_account(t.account_no, t.user_id, t.cash)
        issued.append(sim.admin.create_appkey(t.account_no))
    if access == "gateway":
        _run_apart(_register(cfg, db, sim, list(zip(traders, issued, strict=True))))
    else:
        for t, k in zip(traders, issued, strict=True):
            keys.store(t.user_id, t.account_no, SecretStr(k["appkey"]), SecretStr(k["secretkey"]),
                       account_name=t.user_id, daily_limit=t.daily_limit)  # fmt: skip
    with db.unit_of_work() as s:
        s.execute(
            sa.update(UserApiKey)
            .where(UserApiKey.account_no.in_([t.account_no for t in traders]))
            .values(is_auto_trading_enabled=True)
        )
    return World(sim, cfg, db, keys, list(traders), access_kind=access)


async def _register(
    cfg: Settings, db: Database, sim: RunningSimulator, keys: list[tuple[Trader, dict[str, Any]]]
) -> None:
    """Each key through the vault's registration, as a user would add it."""
    access = GatewayAccess(cfg, db, clock=sim.engine.now)
    try:
        gw = access.gateway()
        for t, k in keys:
            await register_user_api(
                gw, t.user_id, SecretStr(k["appkey"]), SecretStr(k["secretkey"]), t.account_no,
                daily_limit=t.daily_limit, account_name=t.user_id,
            )  # fmt: skip
    finally:
        await access.aclose()


def _run_apart(work: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to the end on its own loop, in a worker thread (the caller may be inside a loop)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, work).result()
