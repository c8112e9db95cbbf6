"""The embedded stack: the simulator under a virtual clock, SQLite, the local KMS provider, the console
notifier and the production services, wired the way a deployment wires them (broker access only through
the vault's gateway, users registered through the real registration path).

Used by ``autotrade demo``, the flow tests and ``bench/evening.py``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, TextIO

from pydantic import SecretStr

from autotrade.access import GatewayAccess, simulator_market_data_key
from autotrade.config import Settings
from autotrade.domain.krx import KST
from autotrade.runtime import Runtime, build_notifier, set_runtime
from autotrade.sim.server import RunningSimulator, running_simulator
from autotrade.sim.universe import seed_universe
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.vault.notices import security_notices
from autotrade.vault.registration import register_user_api

REASONS = ["거래량 급증", "추세 전환"]


@dataclass
class Stack:
    sim: RunningSimulator
    settings: Settings
    db: Database
    access: GatewayAccess
    runtime: Runtime
    codes: list[str]
    users: list[tuple[str, str]] = field(default_factory=list)  # (user id, account number)

    @property
    def scans_dir(self) -> Path:
        return Path(self.settings.scan_location)

    def now(self) -> datetime:
        return self.sim.engine.read_clock()

    def at(self, day: date, t: time) -> None:
        """Stop the clock and move it to ``day`` ``t`` (never backwards); the market runs on the way."""
        self.sim.admin.set_clock(speed=0.0)
        moment = datetime.combine(day, t, tzinfo=KST)
        if moment > self.sim.admin.clock():
            self.sim.admin.set_clock(moment)

    def pause(self) -> None:
        self.sim.admin.set_clock(speed=0.0)

    async def register_users(
        self, n: int, *, cash: int = 30_000_000, limits: Sequence[int] = (5_000_000, 10_000_000)
    ) -> list[tuple[str, str]]:
        """Open a simulated Kiwoom account per user and register its key through the vault."""
        gateway = self.access.gateway()
        for i in range(n):
            user, account = f"user{i + 1:03d}", f"{8_100_000_000 + i:010d}"
            self.sim.admin.create_account(account, user, cash)
            key = self.sim.admin.create_appkey(account)
            await register_user_api(
                gateway, user, SecretStr(key["appkey"]), SecretStr(key["secretkey"]), account,
                daily_limit=limits[i % len(limits)], account_name=f"{user} 위탁",
            )  # fmt: skip
            self.users.append((user, account))
        enable_auto_trading(self.db, [u for u, _ in self.users])
        return list(self.users)

    def write_scan(self, day: date, rng: random.Random, *, rows: int = 12) -> Path:
        """The day's AI scan as the scanner publishes it at 15:36: a JSON file in the scan folder."""
        stocks = self.sim.admin.stocks()
        picked = rng.sample(self.codes, min(rows, len(self.codes)))
        results = [
            {
                "code": c, "name": stocks[c]["name"], "score": round(rng.uniform(6.0, 9.9), 1),
                "current_price": int(stocks[c]["price"]), "reasons": REASONS[: rng.randint(1, 2)],
            }
            for c in picked
        ]  # fmt: skip
        payload = {
            "trading_day": day.isoformat(),
            "generated_at": datetime.combine(day, time(15, 36), tzinfo=KST).isoformat(),
            "scan_results": sorted(results, key=lambda r: -float(str(r["score"]))),
        }
        self.scans_dir.mkdir(parents=True, exist_ok=True)
        path = self.scans_dir / f"scan_{day:%Y%m%d}.json"
        path.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
        return path


class SimulatedTime:
    """The demo's :class:`~autotrade.runtime.ClockControl`: a flow waiting for a moment moves the simulator's
    clock there (the market runs through it); once the price watch is ready the clock runs at ``speed`` and
    stops by itself at the end of the watch (the close), so nothing after it runs late."""

    def __init__(self, sim: RunningSimulator, speed: float) -> None:
        self.sim = sim
        self.speed = speed
        self._until: datetime | None = None

    async def wait_until(self, moment: datetime) -> None:
        import asyncio

        if moment > self.sim.engine.read_clock():
            await asyncio.to_thread(self.sim.admin.set_clock, moment, speed=0.0)

    def watch_ready(self, until: datetime) -> None:
        self._until = until
        self.sim.admin.set_clock(speed=self.speed, stop_at=until)

    def hold(self) -> None:
        # A few milliseconds of order round trip are minutes of virtual time at thousands x: stop the market
        # while sells are in flight, so they fill at the prices that triggered them, as they would live.
        self.sim.admin.set_clock(speed=0.0)

    def resume(self) -> None:
        if self._until is not None and self.sim.engine.read_clock() < self._until:
            self.sim.admin.set_clock(speed=self.speed, stop_at=self._until)


def enable_auto_trading(db: Database, users: Sequence[str]) -> None:
    import sqlalchemy as sa

    from autotrade.store.models import User, UserApiKey

    with db.unit_of_work() as s:
        s.execute(
            sa.update(UserApiKey)
            .where(UserApiKey.user_id.in_(list(users)))
            .values(is_auto_trading_enabled=True)
        )
        s.execute(sa.update(User).where(User.user_id.in_(list(users))).values(auto_trading_enabled=True))


@contextmanager
def embedded_stack(
    data_dir: Path,
    *,
    seed: int = 7,
    stocks: int = 40,
    start: datetime,
    database_url: str | None = None,
    notifications: TextIO | None = None,
    sim_options: dict[str, Any] | None = None,
    speed: float = 3600.0,
    **settings: Any,
) -> Iterator[Stack]:
    """Start the simulator and build the services over a fresh database in ``data_dir``; the runtime is
    installed for flows and tasks (``get_runtime``) until the block exits."""
    data_dir = data_dir.resolve()  # the settings take a relative path under AUTOTRADE_HOME, not here
    data_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        sim = stack.enter_context(running_simulator(seed=seed, start=start, **(sim_options or {})))
        codes = seed_universe(sim.engine, stocks, seed)
        url = database_url or f"sqlite:///{data_dir / 'autotrade.db'}"
        # The operator's market-data key (the price feed's, never a user's), made at the simulator.
        market_data = simulator_market_data_key(sim.base_url)
        cfg = Settings(
            database_url=url, data_dir=data_dir, broker_base_url=sim.base_url,
            market_data_app_key=market_data.app_key, market_data_app_secret=market_data.app_secret,
            local_master_key_path=data_dir / "keys" / "master.key", scan_location=str(data_dir / "scans"),
            metrics_dir=data_dir / "metrics",  # what the serve command printed at the end reads
            # Temporary tokens live eight hours of virtual time: at 3600x that is eight seconds of the demo.
            **{"broker_rate_per_second": 50.0, "broker_burst": 50, "temp_token_ttl_seconds": 8 * 3600}
            | settings,
        )  # fmt: skip
        upgrade(url)
        db = Database(url)
        clock = sim.engine.read_clock
        from autotrade.ops.worker_metrics import enable as record_metrics

        record_metrics(cfg.metrics_dir, db, clock)  # as build_runtime does in every process that trades
        notifier = None
        if notifications is not None:
            from autotrade.notify import ConsoleNotifier

            notifier = build_notifier(cfg, db, notifiers=[ConsoleNotifier(notifications)])
        # The gateway's security alerts reach the operator and the user as in production.
        alerts = security_notices(notifier.dispatch) if notifier is not None else None  # type: ignore[attr-defined]
        access = GatewayAccess(cfg, db, alerts, clock=clock)
        rt = Runtime(cfg, db, clock, access, notifier=notifier, time_control=SimulatedTime(sim, speed))
        set_runtime(rt)
        try:
            yield Stack(sim, cfg, db, access, rt, codes)
        finally:
            set_runtime(None)
            db.engine.dispose()
