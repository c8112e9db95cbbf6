"""Token buckets: unit behaviour on a fake clock, and measured spacing over real HTTP."""

from __future__ import annotations

import asyncio
import time

import pytest

from autotrade.broker.client import KiwoomClient
from autotrade.broker.ratelimit import Limit, RateLimiter, TokenBucket
from autotrade.broker.session import KiwoomSession
from autotrade.broker.tokens import TokenManager
from tests.broker.conftest import CredentialLoader
from tests.broker.fake_kiwoom import FakeKiwoom, serve


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bucket_reservations_on_a_fake_clock() -> None:
    clock = FakeClock()
    bucket = TokenBucket(Limit(1.0, 2), clock)
    # burst of two, then one per second, each caller told its own slot (FIFO)
    assert [bucket.reserve() for _ in range(4)] == [0.0, 0.0, 1.0, 2.0]
    clock.now = 10.0  # idle long enough to refill, but never beyond the burst
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 1.0]


def test_refund_returns_an_unused_slot() -> None:
    clock = FakeClock()
    bucket = TokenBucket(Limit(1.0, 1), clock)
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == 1.0
    bucket.refund()
    assert bucket.reserve() == 1.0


def test_limits_are_per_key_and_api_id_with_overrides() -> None:
    limiter = RateLimiter(Limit(1.0, 2), overrides={"kt10000": Limit(5.0, 5)})
    assert limiter.bucket("alice", "ka10001") is limiter.bucket("alice", "ka10001")
    assert limiter.bucket("alice", "ka10001") is not limiter.bucket("bob", "ka10001")
    assert limiter.bucket("alice", "kt10000").limit == Limit(5.0, 5)
    limiter.forget("alice")
    assert ("alice", "ka10001") not in limiter._buckets


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (1.0, 0)])
def test_invalid_limits(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        Limit(rate, burst)


async def test_cancelled_waiter_gives_its_slot_back() -> None:
    """One request per 100 s on a clock that stands still: the first caller goes at once, the second is
    told 100 s and is cancelled while it waits; the next caller gets that same 100 s slot, not 200 s."""
    bucket = TokenBucket(Limit(0.01, 1), FakeClock())
    await bucket.acquire()
    waiter = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bucket.reserve() == pytest.approx(100.0)  # not pushed behind the cancelled reservation


def _session(client: KiwoomClient, key_id: str, loader: CredentialLoader) -> KiwoomSession:
    return KiwoomSession(client, key_id, TokenManager(client, key_id, loader))


async def test_measured_spacing_over_http(base_url: str, fake: FakeKiwoom, loader: CredentialLoader) -> None:
    """10 a second, burst 2, seven quotes at once: the seventh may leave no earlier than 5 x 0.1 = 0.5 s
    after the first reservation. A loaded machine can only delay requests, so only lower bounds are
    measured in wall time."""
    async with KiwoomClient(base_url, rate_per_second=10, burst=2) as client:
        session = _session(client, "alice", loader)
        await session.quote("005930")  # the token first, then the bucket starts full again after 0.2 s
        await asyncio.sleep(0.25)
        fake.requests.clear()
        first = time.monotonic()
        await asyncio.gather(*(session.quote("005930") for _ in range(7)))
    arrivals = sorted(r.at for r in fake.of("ka10001"))
    assert len(arrivals) == 7
    assert arrivals[-1] - first >= 0.5 - 0.01
    # The i-th request (from 0) cannot arrive before its slot: 0, 0, 0.1, ..., 0.5 s after the first.
    for i, at in enumerate(arrivals):
        assert at - first >= max(0, i - 1) * 0.1 - 0.01, (i, at - first)


async def test_default_budget_keeps_within_the_broker_limit(loader: CredentialLoader) -> None:
    """The default 1 request/s, burst 2 against a server that enforces exactly that: nothing rejected."""
    fake = FakeKiwoom(enforce_rate=(1.0, 2))
    async with serve(fake.app()) as url, KiwoomClient(url, max_query_retries=0) as client:
        session = _session(client, "alice", loader)
        started = time.monotonic()
        await asyncio.gather(*(session.quote("005930") for _ in range(4)))
        elapsed = time.monotonic() - started
    assert fake.rate_rejections == 0
    assert elapsed >= 2.0 - 0.05


async def test_keys_do_not_block_each_other(fake: FakeKiwoom) -> None:
    """On a clock that stands still, 10/s burst 1: each key's quote bucket hands out its own slots. After
    five quotes per key (burst 1, so 4 tokens owed), each key's next slot owes 5 tokens, 0.5 s; one budget
    shared by both keys would owe 10, 1.0 s."""
    fake.keys["APPKEY-BOB"] = "SECRET-BOB"
    limiter = RateLimiter(Limit(10, 1), clock=FakeClock())
    async with serve(fake.app()) as url, KiwoomClient(url, limiter=limiter) as client:
        alice = _session(client, "alice", CredentialLoader())
        bob = _session(client, "bob", CredentialLoader("APPKEY-BOB", "SECRET-BOB"))
        await asyncio.gather(alice.quote("005930"), bob.quote("005930"))  # tokens first
        await asyncio.gather(*(s.quote("005930") for s in (alice, bob) for _ in range(4)))
    assert len(fake.of("ka10001")) == 10
    for key in ("alice", "bob"):
        assert limiter.bucket(key, "ka10001").reserve() == pytest.approx(0.5)  # the 6th slot: 5 owed


async def test_api_ids_have_separate_budgets(
    base_url: str, fake: FakeKiwoom, loader: CredentialLoader
) -> None:
    """On a clock that stands still, 5/s burst 1: the quote empties its own bucket (its next slot is 0.2 s
    away), and the three other api-ids each still go at once."""
    fake.page_size = 10  # one page each, so each api-id is used exactly once below
    limiter = RateLimiter(Limit(5, 1), clock=FakeClock())
    async with KiwoomClient(base_url, limiter=limiter) as client:
        session = _session(client, "alice", loader)
        await session.quote("005930")
        assert limiter.bucket("alice", "ka10001").reserve() == pytest.approx(0.2)
        limiter.bucket("alice", "ka10001").refund()
        await asyncio.gather(session.deposit(), session.holdings(), session.unfilled_orders())
    for api_id in ("kt00001", "kt00018", "ka10075"):
        assert len(fake.of(api_id)) == 1, api_id
        assert limiter.bucket("alice", api_id).reserve() == pytest.approx(0.2), api_id  # one used each
