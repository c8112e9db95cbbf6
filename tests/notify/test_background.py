"""The worker-thread dispatcher: ``dispatch`` returns at once whatever the channels do, a full queue drops
(recorded, counted, the operator told), ``flush`` and ``close`` are bounded and leave nothing unrecorded,
and a Slack 429 asking for a long wait is not slept through."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from starlette.responses import JSONResponse

from autotrade.config import Settings
from autotrade.notify import (
    BackgroundDispatcher,
    InMemoryFailureRecorder,
    Notification,
    NotificationDispatcher,
    NotificationError,
    RetryPolicy,
    Route,
    SlackWebApiNotifier,
    StaticRoutes,
)
from autotrade.notify.messages import OrderLine, buy_orders_placed
from autotrade.runtime import build_notifier
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import NotificationFailure, User
from tests.notify.test_slack import FakeSlack, slack_server  # noqa: F401 - the module's server fixture

ROUTES = StaticRoutes({u: [Route("slack", u.upper())] for u in ("u1", "u2", "u3")})


@dataclass
class GatedNotifier:
    """Blocks every send until ``gate`` is set, as a stalled channel would; remembers what got through."""

    channel: str = "slack"
    gate: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)
    sent: list[tuple[Notification, str | None]] = field(default_factory=list)

    def send(self, notification: Notification, to: str | None = None) -> None:
        self.entered.set()
        self.gate.wait(30)
        self.sent.append((notification, to))


def _eventually(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _buy(user: str, at: datetime) -> Notification:
    return buy_orders_placed(user, [OrderLine("005930", "삼성전자", 14, 71_000)], at)


def background(
    notifier: GatedNotifier, *, queue_size: int, recorder: InMemoryFailureRecorder, attempts: int = 1
) -> BackgroundDispatcher:
    inner = NotificationDispatcher(
        [notifier],
        user_routes=ROUTES,
        operator_routes=[Route("slack", "#ops")],
        recorder=recorder,
        retry=RetryPolicy(attempts=attempts, backoff_seconds=30.0),
    )
    return BackgroundDispatcher(inner, recorder=recorder, queue_size=queue_size, flush_timeout_seconds=5)


def test_dispatch_returns_at_once_while_the_channel_is_stalled(at: datetime) -> None:
    slack = GatedNotifier()
    d = background(slack, queue_size=10, recorder=InMemoryFailureRecorder())
    started = time.monotonic()
    for user in ("u1", "u2", "u3"):
        d.dispatch(_buy(user, at))
    assert time.monotonic() - started < 0.2  # a blocking dispatcher would wait out the 30 s gate
    assert slack.entered.wait(5)
    assert slack.sent == []
    assert d.flush(0.2) is False  # bounded: the stalled channel does not hold the caller
    slack.gate.set()
    assert d.flush(5) is True
    assert [to for _, to in slack.sent] == ["U1", "U2", "U3"]
    assert d.dropped == 0
    d.close()


def test_a_full_queue_drops_records_counts_and_tells_the_operator(at: datetime) -> None:
    """Queue size 1: the first notice is on the (stalled) worker, the second waits in the queue, the third
    finds the queue full and is dropped, recorded with channel ``queue``; the operator hears of it once the
    worker has caught up."""
    slack = GatedNotifier()
    recorder = InMemoryFailureRecorder()
    d = background(slack, queue_size=1, recorder=recorder)
    first, second, third = _buy("u1", at), _buy("u2", at), _buy("u3", at)
    d.dispatch(first)
    assert slack.entered.wait(5)
    d.dispatch(second)
    d.dispatch(third)

    assert d.dropped == 1  # counted at once; recorded by the recording thread while the worker stalls
    assert _eventually(lambda: bool(recorder.failures))
    (failure,) = recorder.failures
    assert (failure.notification_id, failure.channel, failure.audience, failure.attempts) == (
        third.id, "queue", "user:u3", 0,
    )  # fmt: skip
    assert "queue full" in failure.error
    slack.gate.set()
    assert d.flush(5)
    sent = [(n.kind.value, to) for n, to in slack.sent]
    assert sent == [("BUY_ORDERS_PLACED", "U1"), ("BUY_ORDERS_PLACED", "U2"), ("ERROR", "#ops")]
    assert "1건" in slack.sent[-1][0].lines[0]
    d.close()


@dataclass
class SlowNotifier:
    """A channel that takes a moment per notice (a rate-limited API): the queue fills faster than it
    drains."""

    channel: str = "slack"
    sent: list[str | None] = field(default_factory=list)

    def send(self, notification: Notification, to: str | None = None) -> None:
        time.sleep(0.01)
        self.sent.append(to)


def test_notices_sent_in_bulk_wait_for_room_and_none_is_dropped(at: datetime) -> None:
    """Thirty notices into a queue of two: dispatch drops most of them, dispatch_waiting (from a thread
    that may wait, as an evening's notices are sent) waits for room and every one is delivered. On an event
    loop's thread it does not wait (the loop may be sending sells)."""
    import asyncio

    recorder = InMemoryFailureRecorder()
    users = [("u1", "u2", "u3")[i % 3] for i in range(30)]
    hurried = background(SlowNotifier(), queue_size=2, recorder=recorder)  # type: ignore[arg-type]
    for user in users:
        hurried.dispatch(_buy(user, at))
    assert hurried.dropped > 20
    hurried.close()

    slow = SlowNotifier()
    patient = background(slow, queue_size=2, recorder=recorder)  # type: ignore[arg-type]
    for user in users:
        patient.dispatch_waiting(_buy(user, at))
    assert patient.flush(5)
    assert patient.dropped == 0 and slow.sent == [u.upper() for u in users]

    async def on_the_loop() -> float:
        t0 = time.monotonic()
        for user in users:
            patient.dispatch_waiting(_buy(user, at))
        return time.monotonic() - t0

    assert asyncio.run(on_the_loop()) < 0.1 and patient.dropped > 0
    patient.close()


def test_close_records_what_is_left_and_cuts_a_retry_wait_short(at: datetime) -> None:
    """A channel failing with a 30 s backoff between attempts: close(0.3) does not sit it out; the notice
    being retried and the ones still queued are recorded as undelivered; later notices are dropped."""

    @dataclass
    class Failing:
        channel: str = "slack"
        calls: int = 0

        def send(self, notification: Notification, to: str | None = None) -> None:
            self.calls += 1
            raise NotificationError("slack", "HTTP 503", retryable=True)

    recorder = InMemoryFailureRecorder()
    inner = NotificationDispatcher(
        [Failing()], user_routes=ROUTES, operator_routes=[], recorder=recorder,
        retry=RetryPolicy(attempts=3, backoff_seconds=30.0),
    )  # fmt: skip
    d = BackgroundDispatcher(inner, recorder=recorder, queue_size=10)
    notices = [_buy(u, at) for u in ("u1", "u2", "u3")]
    for n in notices:
        d.dispatch(n)
    time.sleep(0.2)  # the worker is in its first backoff
    started = time.monotonic()
    assert d.close(0.3) is False
    assert time.monotonic() - started < 2
    undelivered = {f.notification_id for f in recorder.failures if f.channel == "queue"}
    assert undelivered >= {notices[1].id, notices[2].id}
    late = _buy("u1", at)
    d.dispatch(late)
    assert late.id in {f.notification_id for f in recorder.failures if f.channel == "queue"}
    assert d.dropped == 1


def test_queue_size_setting_reaches_the_runtime_notifier_and_drops_go_to_the_database(
    db_url: str, tmp_path: Path, at: datetime
) -> None:
    """The runtime's notifier from ``Settings``: with ``notify_queue_size=1`` the third notice behind a
    stalled channel is dropped and lands in ``notification_failures``; with 2 nothing is dropped."""
    upgrade(db_url)
    db = Database(db_url)
    try:
        with db.unit_of_work() as s:
            for u in ("u1", "u2", "u3"):
                s.add(User(user_id=u, email=f"{u}@example.com", notify_channels="slack"))
        for size, dropped in ((1, 1), (2, 0)):
            slack = GatedNotifier()
            cfg = Settings(database_url=db_url, data_dir=tmp_path, notifier="slack", notify_queue_size=size)
            d = build_notifier(cfg, db, notifiers=[slack])
            assert isinstance(d, BackgroundDispatcher) and d.queue_size == size
            d.dispatch(_buy("u1", at))
            assert slack.entered.wait(5)
            d.dispatch(_buy("u2", at))
            d.dispatch(_buy("u3", at))
            assert d.dropped == dropped
            slack.gate.set()
            assert d.flush(5)
            # Size 1: u1, u2 and the operator's notice of the drop; size 2: u1, u2, u3.
            assert len(slack.sent) == 3
            d.close()
            with db.unit_of_work() as s:
                rows = s.execute(sa.select(NotificationFailure.channel, NotificationFailure.audience)).all()
            assert [tuple(r) for r in rows] == [("queue", "user:u3")]  # one drop in all, from size 1
    finally:
        db.engine.dispose()


def test_a_long_retry_after_is_not_slept_through(slack_server: tuple[FakeSlack, str], at: datetime) -> None:  # noqa: F811
    """Slack asks for 30 s: with the cap at 10 s the SDK does not wait, the 429 is a retryable error at
    once; with the cap above it, the SDK would wait (checked with Retry-After 1 under a cap of 2)."""
    fake, url = slack_server
    fake.received.clear()
    fake.script.clear()
    fake.script.append(
        JSONResponse({"ok": False, "error": "ratelimited"}, status_code=429, headers={"Retry-After": "30"})
    )
    notifier = SlackWebApiNotifier(
        SecretStr("xoxb-1-2-Token"), default_channel="#ops", base_url=f"{url}/api/",
        max_retry_after_seconds=10,
    )  # fmt: skip
    started = time.monotonic()
    with pytest.raises(NotificationError) as info:
        notifier.send(_buy("u1", at), "U1")
    assert time.monotonic() - started < 3
    assert info.value.retryable and "429" in str(info.value)
    assert len(fake.received) == 1

    fake.received.clear()
    fake.script.append(
        JSONResponse({"ok": False, "error": "ratelimited"}, status_code=429, headers={"Retry-After": "1"})
    )
    SlackWebApiNotifier(
        SecretStr("xoxb-1-2-Token"), default_channel="#ops", base_url=f"{url}/api/", max_retry_after_seconds=2
    ).send(_buy("u1", at), "U1")
    first, second = fake.received
    assert second.at - first.at >= 1.0


_EXIT_SCRIPT = """
import sys, time
from datetime import UTC, datetime
from autotrade.notify import BackgroundDispatcher, NotificationDispatcher, RetryPolicy, Route, StaticRoutes
from autotrade.notify.messages import OrderLine, buy_orders_placed

out, send_seconds, flush_timeout = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])

class Slow:
    channel = "slack"
    def send(self, notification, to=None):
        time.sleep(send_seconds)
        with open(out, "a") as f:
            f.write(f"sent {to}\\n")

class FileRecorder:
    def record(self, failure):
        with open(out, "a") as f:
            f.write(f"failed {failure.audience} {failure.channel}|{failure.error}\\n")

routes = StaticRoutes({u: [Route("slack", u)] for u in ("u1", "u2", "u3")})
inner = NotificationDispatcher([Slow()], user_routes=routes, operator_routes=[], recorder=FileRecorder(),
                               retry=RetryPolicy(attempts=1))
d = BackgroundDispatcher(inner, recorder=FileRecorder(), flush_timeout_seconds=flush_timeout)
at = datetime.now(UTC)
for u in ("u1", "u2", "u3"):
    d.dispatch(buy_orders_placed(u, [OrderLine("005930", "삼성전자", 1, 71_000)], at))
print("dispatched", flush=True)
"""


@pytest.mark.parametrize(
    ("send_seconds", "flush_timeout", "expected"),
    [
        # The process ends at once after queueing: the exit hook lets the worker finish all three.
        (0.2, 10.0, ["sent u1", "sent u2", "sent u3"]),
        # A channel far slower than the flush timeout: the one in flight and the two queued are recorded as
        # undelivered at exit rather than silently lost (the in-flight one may still go out first).
        (3.0, 0.3, ["failed user:u1 queue", "failed user:u2 queue", "failed user:u3 queue"]),
    ],
)
def test_a_process_that_ends_delivers_or_records_every_queued_notice(
    tmp_path: Path, send_seconds: float, flush_timeout: float, expected: list[str]
) -> None:
    import subprocess
    import sys

    out = tmp_path / "out.txt"
    out.touch()
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, str(out), str(send_seconds), str(flush_timeout)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "dispatched"
    lines = [line.split("|")[0] for line in out.read_text().splitlines()]
    assert sorted(set(lines)) == expected
