"""The composition root: builds the services a process needs from the settings, once per process.

Flows and tasks call :func:`get_runtime`; tests and the demo install their own with :func:`set_runtime`.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import InitVar, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import sqlalchemy as sa

from autotrade.config import Settings, get_settings
from autotrade.domain.krx import KST, CostRates
from autotrade.domain.models import ApiStatus
from autotrade.store.db import Database
from autotrade.store.models import NotificationFailure, ThreeTierStrategy, User, UserApiKey
from autotrade.trading.buys import AccountRef, BuyService
from autotrade.trading.exit_engine import ExitEngine
from autotrade.trading.orders import OrderService
from autotrade.trading.ports import AccountBroker
from autotrade.trading.positions import PositionService
from autotrade.trading.reconcile import Reconciler
from autotrade.trading.resting_stops import RestingStops

if TYPE_CHECKING:
    from autotrade.broker.fallback import FeedSwitch
    from autotrade.broker.messages import Quote

Clock = Callable[[], datetime]

READ = frozenset({"account:read"})
TRADE = frozenset({"account:read", "order:buy", "order:sell", "order:cancel"})
SELL = frozenset({"account:read", "order:sell", "order:cancel"})


def system_clock() -> datetime:
    return datetime.now(KST)


@dataclass(frozen=True)
class ShiftedClock:
    """Time that started at ``start`` when the monotonic clock read ``origin`` and passes with it: the time
    of a simulated market opened at a chosen moment. A value rather than a closure, so worker processes
    (which share the system's monotonic clock) read the same time as the process that made it."""

    start: datetime
    origin: float

    @classmethod
    def starting_at(cls, start: datetime) -> ShiftedClock:
        return cls(start, time.monotonic())

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.origin)


class BrokerAccess(Protocol):
    """Gives a task the broker of one account, for the actions it needs, without handing it secrets."""

    async def for_account(
        self, ref: AccountRef, actions: frozenset[str], spend_cap: int | None = None
    ) -> AccountBroker: ...

    async def price_feed(self, on_switch: Callable[[FeedSwitch], None] | None = None) -> PriceSource:
        """The operator's price source; ``on_switch`` hears when it falls back to polling and back."""
        ...

    async def aclose(self) -> None: ...


class PriceSource(Protocol):
    """Real-time trade prices (Kiwoom's 0B feed, or polling quotes)."""

    async def subscribe(self, codes: Sequence[str]) -> None: ...

    async def next_tick(self, wait_seconds: float) -> tuple[str, int, datetime] | None:
        """The next (code, price, time), or None when nothing came within ``wait_seconds``."""
        ...

    @property
    def gaps(self) -> int:
        """How many times trades may have gone by unseen so far (see
        :attr:`autotrade.broker.feed.PriceFeed.gaps`); only grows."""
        ...

    async def day_range(self, code: str) -> tuple[int, int] | None:
        """Today's (low, high) trade prices so far from the broker's quote; None when unknown."""
        ...

    async def quote(self, code: str) -> Quote | None:
        """The broker's quote of ``code`` now (ka10001: the day's open, high, low, last price, volume); None
        when this source has no quotes. Broker errors are raised."""
        ...

    async def aclose(self) -> None: ...


class ClockControl(Protocol):
    """How flows wait for a moment of the trading day. Live: the wall clock passes. The simulator-driven demo
    moves its virtual clock instead (and lets the market run once the price watch is ready)."""

    async def wait_until(self, moment: datetime) -> None: ...

    def watch_ready(self, until: datetime) -> None: ...

    def hold(self) -> None:
        """Orders are on their way to the broker: a simulated market waits for them."""

    def resume(self) -> None: ...


class PassingTime:
    """:class:`ClockControl` for a clock that moves by itself."""

    def __init__(self, clock: Clock, poll_seconds: float = 0.2) -> None:
        self.clock = clock
        self.poll_seconds = poll_seconds

    async def wait_until(self, moment: datetime) -> None:
        import asyncio

        while self.clock() < moment:  # noqa: ASYNC110 - the clock is not ours to signal; poll it
            await asyncio.sleep(self.poll_seconds)

    def watch_ready(self, until: datetime) -> None:
        return None

    def hold(self) -> None:
        return None

    def resume(self) -> None:
        return None


@dataclass
class Runtime:
    settings: Settings
    db: Database
    clock: Clock
    brokers: BrokerAccess
    notifier: object | None = None  # NotificationDispatcher; typed loosely to keep import time low
    # A worker process runs every task in an event loop of its own, so a task closes its broker access
    # (bound to that loop) when it ends.
    worker_process: bool = False
    # How flows wait for a moment: given (the demo's simulated time) or the clock passing by itself.
    time_control: InitVar[ClockControl | None] = None
    time: ClockControl = field(init=False)
    costs: CostRates = field(init=False)
    orders: OrderService = field(init=False)
    buys: BuyService = field(init=False)
    engine: ExitEngine = field(init=False)
    positions: PositionService = field(init=False)
    reconciler: Reconciler = field(init=False)
    resting: RestingStops | None = field(init=False, default=None)

    def __post_init__(self, time_control: ClockControl | None) -> None:
        self.time = time_control or PassingTime(self.clock)
        self.costs = self.settings.costs()
        settle = timedelta(seconds=self.settings.order_settle_seconds)
        self.orders = OrderService(self.db, self.clock, settle=settle)
        self.buys = BuyService(self.db, self.orders, self.settings, self.clock)
        self.engine = ExitEngine(self.db, self.settings, self.clock)
        self.positions = PositionService(self.db, self.engine, self.costs, self.clock)
        self.reconciler = Reconciler(self.db, self.orders, self.positions, self.engine, self.clock)
        if self.settings.resting_stop:  # a stop rests at the broker; market sells clear it out of their way
            self.resting = RestingStops(
                self.db, self.engine, self.orders, self.positions, self.settings, self.clock
            )
            self.orders.before_send = self.resting.before_send
            self.reconciler.resting = self.resting

    def accounts(self, users: Sequence[str] | None = None, *, trading_only: bool = True) -> list[AccountRef]:
        """Accounts to work on. ``trading_only`` (buys): an ACTIVE key with auto-trading enabled. Otherwise
        (exits, fills, reconciliation, reports, current prices; sells and reads only) every ACTIVE key, and
        every key DISABLED by the kill switch that still has open positions of the product: its sell-only
        scope keeps their exits firing."""
        with self.db.unit_of_work() as s:
            if trading_only:
                q = sa.select(UserApiKey.user_id, UserApiKey.account_no).where(
                    UserApiKey.api_status == ApiStatus.ACTIVE, UserApiKey.is_auto_trading_enabled.is_(True)
                )
            else:
                holding = sa.exists().where(
                    ThreeTierStrategy.user_id == UserApiKey.user_id,
                    ThreeTierStrategy.account_no == UserApiKey.account_no,
                    ThreeTierStrategy.closed_at.is_(None), ThreeTierStrategy.held_quantity > 0,
                )  # fmt: skip
                q = sa.select(UserApiKey.user_id, UserApiKey.account_no).where(
                    sa.or_(
                        UserApiKey.api_status == ApiStatus.ACTIVE,
                        sa.and_(UserApiKey.api_status == ApiStatus.DISABLED, holding),
                    )
                )
            if users:
                q = q.where(UserApiKey.user_id.in_(list(users)))
            rows = s.execute(q.order_by(UserApiKey.user_id, UserApiKey.account_no)).all()
        return [AccountRef(r.user_id, r.account_no) for r in rows]

    def preload_routes(self, user_ids: Iterable[str]) -> None:
        """Before notices to many users: their routes read at once (see :class:`UserRoutes`)."""
        preload = getattr(self.notifier, "preload_routes", None)
        if preload is not None:
            preload(user_ids)

    def notify(self, notification: object, *, wait: bool = False) -> None:
        """Send a notification; never raises (the dispatcher records failures). With ``wait`` (notices sent
        in bulk, from a thread that may wait) a full queue is waited on rather than the notice dropped."""
        if self.notifier is None:
            return
        waiting = getattr(self.notifier, "dispatch_waiting", None) if wait else None
        if waiting is not None:
            waiting(notification)
        else:
            self.notifier.dispatch(notification)  # type: ignore[attr-defined]


def build_notifier(settings: Settings, db: Database, notifiers: Sequence[object] | None = None) -> object:
    """The dispatcher for the configured channels (or exactly ``notifiers``); failures go to the database.
    ``dispatch`` queues and returns at once: a worker thread delivers, so no channel holds the event loop
    that sends sells (``autotrade.notify.background``)."""
    from autotrade.notify import Channel, NotifySettings, build_background_dispatcher
    from autotrade.notify.dispatcher import DeliveryFailure
    from autotrade.notify.kakao import NHN_ALIMTALK_URL
    from autotrade.notify.model import NotificationKind

    cfg = NotifySettings(
        slack_token=settings.slack_token,
        slack_webhook_url=settings.slack_webhook_url,
        slack_operator_channel=settings.slack_operator_channel,
        **({"slack_base_url": settings.slack_base_url} if settings.slack_base_url else {}),
        sns_region=settings.sns_region,
        sns_endpoint_url=settings.sns_endpoint_url,
        sns_topic_arn=settings.sns_topic_arn,
        kakao_base_url=settings.kakao_base_url or NHN_ALIMTALK_URL,
        kakao_app_key=settings.kakao_app_key,
        kakao_secret_key=settings.kakao_secret_key,
        kakao_sender_key=settings.kakao_sender_key,
        kakao_templates={NotificationKind(k): v for k, v in settings.kakao_templates.items()},
        operator_phone=settings.operator_phone,
        operator_channels=[Channel(c.strip()) for c in settings.notifier.split(",") if c.strip()],
        timeout_seconds=settings.notify_timeout_seconds,
        slack_max_retry_after_seconds=settings.notify_max_retry_after_seconds,
        queue_size=settings.notify_queue_size,
        flush_timeout_seconds=settings.notify_flush_timeout_seconds,
    )

    routes = UserRoutes(db)

    class DbRecorder:
        def record(self, failure: DeliveryFailure) -> None:
            with db.unit_of_work() as s:
                s.add(
                    NotificationFailure(
                        at=failure.at, channel=failure.channel, audience=str(failure.audience),
                        kind=str(failure.kind), error=failure.error[:500], attempts=failure.attempts,
                    )
                )  # fmt: skip

    if notifiers is None:
        notifiers = _channels(cfg, settings)
    return build_background_dispatcher(cfg, routes, recorder=DbRecorder(), notifiers=notifiers)  # type: ignore[arg-type]


class UserRoutes:
    """Each user's notification routes (their channels, their phone number) from the users table: read for
    each notice, or for many users in one query before a bulk of notices (:meth:`preload`: each user's
    reading then serves their next notice within :data:`PRELOADED_SECONDS`, and the table is read again for
    the one after). One read per notice cost three quarters of a notice's delivery (0.7 of 0.9 ms of CPU)."""

    PRELOADED_SECONDS = 60.0

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._preloaded: dict[str, tuple[float, list[object]]] = {}

    def preload(self, user_ids: Iterable[str]) -> None:
        ids = sorted(set(user_ids))
        found: dict[str, list[object]] = {}
        for i in range(0, len(ids), 1000):
            part = ids[i : i + 1000]
            with self._db.unit_of_work() as s:
                rows = s.execute(sa.select(User.user_id, User.notify_channels, User.phone).where(
                    User.user_id.in_(part))).all()  # fmt: skip
            known = {r.user_id: (r.notify_channels, r.phone) for r in rows}
            found.update({u: self._routes(*known.get(u, ("console", None))) for u in part})
        now = time.monotonic()
        with self._lock:
            self._preloaded.update({u: (now, r) for u, r in found.items()})

    def __call__(self, user_id: str) -> list[object]:
        with self._lock:
            hit = self._preloaded.pop(user_id, None)
        if hit is not None and time.monotonic() - hit[0] <= self.PRELOADED_SECONDS:
            return hit[1]
        with self._db.unit_of_work() as s:
            user = s.get(User, user_id)
            return self._routes(user.notify_channels if user else "console", user.phone if user else None)

    @staticmethod
    def _routes(channels: str, phone: str | None) -> list[object]:
        from autotrade.notify import Route

        names = [c.strip() for c in channels.split(",") if c.strip()]
        return [Route(c, _address(c, phone)) for c in names]


def _address(channel: str, phone: str | None) -> str | None:
    """A user's address on a channel: KakaoTalk takes the mobile number as stored (01012345678), an SMS over
    SNS its E.164 form (+821012345678); Slack and the console use their default destination."""
    if phone is None:
        return None
    if channel == "kakao":
        return phone
    if channel == "sns":
        digits = "".join(ch for ch in phone if ch.isdigit())
        return "+82" + digits[1:] if digits.startswith("0") else "+" + digits
    return None


def _channels(cfg: object, settings: Settings) -> list[object]:
    """Every channel the settings configure (console, Slack, SNS, KakaoTalk); SNS signs with the
    configured AWS credentials (the notifier block's), else with boto3's usual chain."""
    from autotrade.notify.settings import NotifySettings, build_notifiers
    from autotrade.notify.sns import SnsNotifier

    assert isinstance(cfg, NotifySettings)  # noqa: S101
    built: list[object] = list(build_notifiers(cfg))
    key_id, secret = settings.sns_aws_access_key_id, settings.sns_aws_secret_access_key
    if key_id is None or secret is None:
        return built
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "sns", region_name=settings.sns_region, endpoint_url=settings.sns_endpoint_url,
        aws_access_key_id=key_id.get_secret_value(), aws_secret_access_key=secret.get_secret_value(),
        config=Config(
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=min(5.0, settings.notify_timeout_seconds),
            read_timeout=settings.notify_timeout_seconds,
        ),
    )  # fmt: skip
    sns = SnsNotifier(
        region=settings.sns_region, default_target=settings.sns_topic_arn,
        timeout_seconds=settings.notify_timeout_seconds, client=client,
    )  # fmt: skip
    return [sns if isinstance(n, SnsNotifier) else n for n in built]


_runtime: Runtime | None = None


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def get_runtime() -> Runtime:
    """The process's runtime, built from the settings (and Prefect blocks, when present) on first use:
    ``get_runtime().settings`` is what the blocks say, over the environment."""
    global _runtime
    if _runtime is None:
        _runtime = build_runtime(configured_settings())
    return _runtime


def prefect_api_configured() -> bool:
    """A Prefect API to read blocks from: ``PREFECT_API_URL`` set (a server, the test harness). The embedded
    mode has none; Prefect's ephemeral in-process server holds no blocks of ours, so it is not asked."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def configured_settings(base: Settings | None = None) -> Settings:
    """The environment's settings, overlaid with every saved block when a Prefect API is configured (four
    reads, once per process: :func:`get_runtime` keeps the result)."""
    settings = base or get_settings()
    if not prefect_api_configured():
        return settings
    from blocks.autotrade_blocks import settings_from_blocks

    return settings_from_blocks(settings)


def build_runtime(
    settings: Settings, clock: Clock = system_clock, *, worker_process: bool = False
) -> Runtime:
    """The services of one process, over its own database pool and broker access."""
    from autotrade.access import build_broker_access
    from autotrade.ops.logs import configure_logging

    configure_logging(settings.log_format)  # AUTOTRADE_LOG_FORMAT=json: JSON lines with the run ids

    pooled = {} if settings.database_url.startswith("sqlite") else {"pool_size": settings.database_pool_size}
    from autotrade.vault.notices import security_notices

    db = Database(settings.database_url, batching=settings.database_batching, **pooled)
    from autotrade.ops.worker_metrics import enable as record_metrics

    # this process's broker, tick and exit metrics to the folder the API's /metrics reads; the broker's
    # response times of the day to the database (the daily report's average)
    record_metrics(settings.metrics_dir, db, clock)
    notifier = build_notifier(settings, db)
    # The gateway's kill switch and re-enables reach the operator and the user through the dispatcher.
    alerts = security_notices(notifier.dispatch)  # type: ignore[attr-defined]
    return Runtime(
        settings=settings,
        db=db,
        clock=clock,
        brokers=build_broker_access(settings, db, alerts, clock=clock),
        notifier=notifier,
        worker_process=worker_process,
    )


def start_worker_process(settings: Settings, clock: Clock) -> None:
    """Runs first in each worker process of the evening buys: the runtime of the process that started it,
    rebuilt from the same settings and clock. They travel over the pool's pipe: no secret is added to the
    environment, and none reaches Prefect (the tasks' parameters carry account numbers only)."""
    set_runtime(build_runtime(settings, clock, worker_process=True))


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


_busy_lock = threading.Lock()
_busy_users = 0
_busy_thresholds: list[int] = []
# The collector's thresholds meanwhile (Python's are 700, 10, 10): a young collection every 50,000 net new
# objects rather than 700, an older one every 50 of those, a full one hardly ever (the run is minutes long
# and its cycles are young). Measured over the evening flow at 1,000 users, Python's thresholds: 1.3 s of
# collections; at 10,000 users, 10,000/20/100 over the buys only: 6.5 s; these, over the buys and their
# notices: 1.8 s, the process's peak memory 690 MB (470 MB before the run).
BUSY_GC_THRESHOLDS = (50_000, 50, 1_000)


@contextmanager
def many_accounts_at_once() -> Iterator[None]:
    """While thousands of accounts are worked on in this process, the garbage collector is kept off the
    objects that were there before (modules, the runtime, caches): its full passes over them took over a
    quarter of the evening run's CPU. It also runs less often (:data:`BUSY_GC_THRESHOLDS`). The objects and
    the thresholds go back to it when the last such run leaves; nothing is leaked. (A shorter thread switch
    interval was tried as well: 20% slower at 3,000 users.)"""
    global _busy_users
    with _busy_lock:
        if _busy_users == 0:
            gc.collect()
            gc.freeze()
            _busy_thresholds[:] = gc.get_threshold()
            gc.set_threshold(*BUSY_GC_THRESHOLDS)
        _busy_users += 1
    try:
        yield
    finally:
        with _busy_lock:
            _busy_users -= 1
            if _busy_users == 0:
                gc.set_threshold(*_busy_thresholds)
                gc.unfreeze()
