"""Nothing slow stands in front of a sell: a burst of stop crossings goes through the real sell path
(``tasks.exits.send_sell``, which tells each user of the fill through the runtime's notifier) against the
simulator over real HTTP, once with healthy channels and once with Slack answering every request 429 with a
long ``Retry-After`` and an SNS endpoint that accepts connections and never answers. The gap from each
crossing to its sell reaching the broker must not grow with the stall.

The crossings come on a fixed timetable, as ticks would: a crossing's time is when it was due, so a loop
held by a notice shows as a longer gap for every crossing behind it. The broker's arrival time is taken in
the simulator's own order listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from moto.server import ThreadedMotoServer
from pydantic import SecretStr
from starlette.responses import JSONResponse

from autotrade.domain.krx import KST
from autotrade.notify import BackgroundDispatcher, SlackWebApiNotifier, SnsNotifier
from autotrade.runtime import build_notifier
from autotrade.sim.server import RunningSimulator, running_simulator
from autotrade.store.models import NotificationFailure, ThreeTierStrategy, User
from tasks.exits import send_sell
from tests.notify.conftest import free_port, serve
from tests.notify.test_slack import FakeSlack
from tests.trading.harness import Trader, World, make_world

D1, D2 = date(2026, 11, 23), date(2026, 11, 24)
CODES = [f"3000{i}0" for i in range(1, 9)]
PRICES = [8_150, 12_400, 23_750, 31_900, 45_300, 52_800, 67_100, 88_600]
TRADERS = [
    Trader("kang", "6002000011", 30_000_000, 10_000_000),
    Trader("yoon", "6002000022", 30_000_000, 10_000_000),
]
HEALTHY, STALLED = CODES[:4], CODES[4:]
SPACING = 0.15  # seconds between crossings: a burst
RETRY_AFTER = 5  # what the stalled Slack asks for, under the 10 s cap: the SDK does wait it out (twice)
SNS_PHONE = "+821012345678"


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    start = datetime.combine(D1, dtime(15, 0), tzinfo=KST)
    with running_simulator(
        seed=11, start=start, volatility=0.0005, gap_volatility=0.0, after_hours_fill_rate=1.0
    ) as s:
        s.admin.add_stocks(
            [{"code": c, "name": f"종목{c}", "prev_close": p} for c, p in zip(CODES, PRICES, strict=True)]
        )  # fmt: skip
        yield s


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="ap-northeast-2"
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=(port := free_port()), verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """A loopback port that accepts connections and never answers: an SNS endpoint hanging."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        listener.close()


@dataclass
class BrokerArrivals:
    """SELL orders as the simulator receives them: code -> wall-clock arrival times."""

    at: dict[str, list[float]] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)

    def __call__(self, order: Any, fill: Any) -> None:
        if order.side == "SELL" and order.order_no not in self._seen:
            self._seen.add(order.order_no)
            self.at.setdefault(order.code, []).append(time.monotonic())


def stops(w: World, codes: list[str]) -> dict[str, int]:
    with w.db.unit_of_work() as s:
        rows = s.execute(
            sa.select(ThreeTierStrategy.code, ThreeTierStrategy.stop_loss_price).where(
                ThreeTierStrategy.code.in_(codes)
            )
        ).all()
    return {code: min(stop for c, stop in rows if c == code) for code in codes}


async def burst(w: World, codes: list[str], arrivals: BrokerArrivals) -> list[float]:
    """The codes cross their stops one after another, ``SPACING`` apart, as the price loop sees them; every
    fired sell is sent in a task of its own, as ``watch_prices`` does. Returns crossing-to-broker gaps."""
    levels = stops(w, codes)
    for code in codes:
        w.sim.admin.set_price(code, levels[code] - 300)  # the market is there before the loop sees it
    due: dict[str, float] = {}
    tasks: list[asyncio.Task[None]] = []
    t0 = time.monotonic() + 0.05
    for i, code in enumerate(codes):
        due[code] = t0 + i * SPACING
        await asyncio.sleep(max(0.0, due[code] - time.monotonic()))
        for sell in w.rt.engine.on_price(code, levels[code] - 300, w.now()):
            tasks.append(asyncio.create_task(send_sell(w.rt, sell, D2)))
    await asyncio.gather(*tasks)
    assert len(tasks) == len(codes) * len(TRADERS)  # each trader holds each code: one stop sell each
    gaps = [at - due[code] for code in codes for at in arrivals.at.get(code, [])]
    assert len(gaps) == len(tasks), "every fired sell reached the broker"
    return gaps


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


async def test_a_stalled_slack_and_sns_do_not_delay_the_sells(
    sim: RunningSimulator, db_url: str, tmp_path: Path, moto_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    w = make_world(sim, db_url, tmp_path, TRADERS, notifier="slack")
    arrivals = BrokerArrivals()
    sim.engine.order_listeners.append(arrivals)
    fake_ok, fake_429 = FakeSlack(), FakeSlack()
    fake_429.script.extend(
        JSONResponse({"ok": False, "error": "ratelimited"}, status_code=429,
                     headers={"Retry-After": str(RETRY_AFTER)})
        for _ in range(1_000)
    )  # fmt: skip
    dispatchers: list[BackgroundDispatcher] = []
    try:
        await w.evening(D1, w.scan_for(CODES, [9.0 - i * 0.1 for i in range(len(CODES))]))
        with w.db.unit_of_work() as s:
            for t in TRADERS:
                user = s.get(User, t.user_id) or User(user_id=t.user_id)
                user.notify_channels = "slack,sns"
                s.merge(user)
        assert set(stops(w, CODES)) == set(CODES)
        w.at(D2, dtime(9, 30))
        w.restart()
        await w.reconcile_all(D2)  # sessions and tokens warm for both runs alike

        def notifier(slack_url: str, sns_url: str) -> BackgroundDispatcher:
            d = build_notifier(
                w.settings,
                w.db,
                notifiers=[
                    SlackWebApiNotifier(SecretStr("xoxb-1-2-StallToken"), default_channel="#ops",
                                        base_url=f"{slack_url}/api/"),
                    SnsNotifier(region="ap-northeast-2", endpoint_url=sns_url, default_target=SNS_PHONE),
                ],
            )  # fmt: skip
            assert isinstance(d, BackgroundDispatcher)
            dispatchers.append(d)
            return d

        with serve(fake_ok.app()) as ok_url:
            w.rt.notifier = notifier(ok_url, moto_url)
            healthy = await burst(w, HEALTHY, arrivals)
            assert dispatchers[0].flush(30)
        assert len(fake_ok.received) == len(healthy)  # each fill told on Slack (and SNS), none lost

        with serve(fake_429.app()) as slow_url, silent_endpoint() as hung_url:
            w.rt.notifier = notifier(slow_url, hung_url)
            stalled = await burst(w, STALLED, arrivals)
            with capsys.disabled():
                print(
                    f"\ncrossing-to-sell gap over {len(healthy)} sells: healthy p95 {p95(healthy):.3f} s "
                    f"(max {max(healthy):.3f}); Slack 429 Retry-After {RETRY_AFTER} s + SNS hung: "
                    f"p95 {p95(stalled):.3f} s (max {max(stalled):.3f})"
                )
            assert p95(stalled) <= p95(healthy) + 0.5
            assert max(stalled) <= max(healthy) + 1.5
            # The notices are still stuck behind Slack's Retry-After and the hanging SNS, seconds after
            # the last sell reached the broker: the stall was real while the sells went through.
            assert len(fake_429.received) >= 1
            assert not dispatchers[1].flush(0.5)
            dispatchers[1].close(0.5)
        with w.db.unit_of_work() as s:
            lost = s.scalar(
                sa.select(sa.func.count(NotificationFailure.id)).where(NotificationFailure.channel == "queue")
            )
        assert lost and lost >= 1  # what the stall kept from the users is on record, not silently gone
    finally:
        sim.engine.order_listeners.remove(arrivals)
        for d in dispatchers:
            d.close(0.1)
        await w.aclose()
        w.db.engine.dispose()
