"""Token buckets: unit behaviour on a fake clock, and measured spacing over real HTTP."""

from __future__ import annotations

import asyncio
import itertools
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
    bucket = TokenBucket(Limit(10.0, 1))
    await bucket.acquire()
    waiter = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    started = time.monotonic()
    await bucket.acquire()
    assert time.monotonic() - started < 0.1  # not pushed behind the cancelled reservation


def _session(client: KiwoomClient, key_id: str, loader: CredentialLoader) -> KiwoomSession:
    return KiwoomSession(client, key_id, TokenManager(client, key_id, loader))


async def test_measured_spacing_over_http(base_url: str, fake: FakeKiwoom, loader: CredentialLoader) -> None:
    async with KiwoomClient(base_url, rate_per_second=10, burst=2) as client:
        session = _session(client, "alice", loader)
        await asyncio.gather(*(session.quote("005930") for _ in range(7)))
    arrivals = [r.at for r in fake.of("ka10001")]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert gaps[0] < 0.05  # the burst
    assert all(g > 0.08 for g in gaps[1:]), gaps  # then 1/rate = 0.1 s apart, minus timer jitter
    assert arrivals[-1] - arrivals[0] >= 0.5 - 0.02


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
    fake.keys["APPKEY-BOB"] = "SECRET-BOB"
    async with serve(fake.app()) as url, KiwoomClient(url, rate_per_second=10, burst=1) as client:
        alice = _session(client, "alice", CredentialLoader())
        bob = _session(client, "bob", CredentialLoader("APPKEY-BOB", "SECRET-BOB"))
        await asyncio.gather(alice.quote("005930"), bob.quote("005930"))  # tokens first
        started = time.monotonic()
        await asyncio.gather(*(s.quote("005930") for s in (alice, bob) for _ in range(4)))
        elapsed = time.monotonic() - started
    # 4 per key at 10/s takes ~0.4 s; sharing one budget would take ~0.8 s
    assert 0.3 - 0.02 <= elapsed < 0.6


async def test_api_ids_have_separate_budgets(
    base_url: str, fake: FakeKiwoom, loader: CredentialLoader
) -> None:
    fake.page_size = 10  # one page each, so each api-id is used exactly once below
    async with KiwoomClient(base_url, rate_per_second=5, burst=1) as client:
        session = _session(client, "alice", loader)
        await session.quote("005930")
        started = time.monotonic()
        await asyncio.gather(session.deposit(), session.holdings(), session.unfilled_orders())
        assert time.monotonic() - started < 0.15  # none waited for the quote's bucket
