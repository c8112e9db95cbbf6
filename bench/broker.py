"""Order throughput and latency of the bare broker client against the simulator in its own process.

    python bench/broker.py [--accounts 1,10,100] [--seconds 5] [--rate 1000] [--product-limits]

Starts ``autotrade sim serve`` as a separate process (a fresh one per run, its clock stopped at 10:00 KST
on the last trading day, so every market order fills at once) and creates the accounts and app keys
through the admin API. Each run: one ``KiwoomClient``, one ``KiwoomSession`` per account, tokens issued
first (not timed), then for ``--seconds`` every account places market buys of one share in a loop, one
order in flight per account. Latency is the duration of each ``session.buy`` call, including any wait in
the client's per-key rate limiter. ``--rate`` is the client's per-key, per-api-id rate (the default 1000
keeps the limiter from binding); ``--product-limits`` adds the same runs at the product default (1/s,
burst 2).

Prints one JSON object on stdout; progress goes to stderr. Everything stays on 127.0.0.1 and stops by
itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from autotrade.broker import (
    BrokerError,
    Credentials,
    KiwoomClient,
    KiwoomSession,
    TokenManager,
    TradeType,
)
from autotrade.broker.client import TransportChoice
from autotrade.domain.calendar import previous_trading_day
from autotrade.domain.krx import KST
from autotrade.sim.server import Admin, simulator_process

CASH = 10_000_000_000  # enough for every one-share buy a run can place
PRODUCT_RATE, PRODUCT_BURST = 1.0, 2  # autotrade.config.Settings defaults


def log(msg: str) -> None:
    print(f"[broker bench] {msg}", file=sys.stderr, flush=True)


def create_keys(admin: Admin, first: int, count: int) -> list[dict[str, Any]]:
    keys = []
    for i in range(first, first + count):
        account = f"{8_000_000_000 + i:010d}"
        admin.create_account(account, f"bench{i:05d}", CASH)
        keys.append(admin.create_appkey(account))
    return keys


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


async def run(
    base_url: str,
    keys: list[dict[str, Any]],
    codes: list[str],
    *,
    seconds: float,
    rate: float,
    burst: int,
    transport: TransportChoice,
    virtual_start: datetime,
) -> dict[str, Any]:
    client = KiwoomClient(base_url, transport=transport, timeout=10, rate_per_second=rate, burst=burst)
    # The simulator's clock stands still at ``virtual_start``; its tokens expire 24 h after that, which may
    # already be past on the wall clock, so the token managers read a clock that starts there too.
    t0 = time.monotonic()

    def clock() -> datetime:
        return virtual_start + timedelta(seconds=time.monotonic() - t0)

    sessions, managers = [], []
    for k in keys:

        async def creds(k: dict[str, Any] = k) -> Credentials:
            return Credentials(app_key=SecretStr(k["appkey"]), app_secret=SecretStr(k["secretkey"]))

        key_id = f"bench:{k['account_no']}"
        tm = TokenManager(client, key_id, creds, clock=clock)
        managers.append(tm)
        sessions.append(KiwoomSession(client, key_id, tm))
    try:
        await asyncio.gather(*(s.deposit() for s in sessions))  # tokens issued, connections warm
        tokens_before = sum(tm.issued_count for tm in managers)
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        started = time.perf_counter()
        deadline = started + seconds

        async def account(s: KiwoomSession, offset: int) -> None:
            i = offset
            while time.perf_counter() < deadline:
                code = codes[i % len(codes)]
                i += 1
                t = time.perf_counter()
                try:
                    await s.buy(code, 1, None, TradeType.MARKET)
                except BrokerError as exc:
                    errors[type(exc).__name__] += 1
                    continue
                latencies.append((time.perf_counter() - t) * 1000)

        await asyncio.gather(*(account(s, n) for n, s in enumerate(sessions)))
        elapsed = time.perf_counter() - started
        reissued = sum(tm.issued_count for tm in managers) - tokens_before
    finally:
        await client.aclose()
    latencies.sort()
    return {
        "accounts": len(keys),
        "orders": len(latencies),
        "seconds": round(elapsed, 3),
        "orders_per_second": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 99), 2) if latencies else None,
        "errors": dict(errors),
        "tokens_reissued": reissued,
        "rate_per_second": rate,
        "burst": burst,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", default="1,10,100", help="comma-separated account counts")
    ap.add_argument("--seconds", type=float, default=5.0, help="timed duration of each run")
    ap.add_argument("--rate", type=float, default=1000.0, help="client rate per key and api-id, per second")
    ap.add_argument("--burst", type=int, default=None, help="client burst per key and api-id (default: rate)")
    ap.add_argument("--product-limits", action="store_true", help="also run at 1/s with a burst of 2")
    ap.add_argument("--transport", choices=["aiohttp", "httpx"], default="aiohttp")
    ap.add_argument("--stocks", type=int, default=60)
    ap.add_argument("--codes", type=int, default=5, help="how many stock codes the accounts buy")
    args = ap.parse_args()
    try:
        counts = [int(c) for c in args.accounts.split(",") if c.strip()]
    except ValueError:
        ap.error("--accounts takes comma-separated integers, e.g. 1,10,100")
    if not counts or min(counts) < 1 or args.seconds <= 0 or args.rate <= 0:
        ap.error("--accounts must be positive integers; --seconds and --rate positive")
    burst = args.burst or max(2, int(args.rate))

    day = previous_trading_day(datetime.now(KST).date())
    at = datetime.combine(day, datetime.min.time(), tzinfo=KST).replace(hour=10)
    work = Path(tempfile.mkdtemp(prefix="autotrade-broker-bench-"))
    plans = [(n, args.rate, burst) for n in counts]
    if args.product_limits:
        plans += [(n, PRODUCT_RATE, PRODUCT_BURST) for n in counts]
    results: list[dict[str, Any]] = []
    codes: list[str] = []
    for run_no, (n, rate, b) in enumerate(plans, 1):
        # A fresh simulator per run: its order book grows with every order placed and the engine's cost
        # per order grows with it, so a shared simulator would slow each run by the ones before it.
        log_path = work / f"simulator-{run_no}.log"
        log(f"run {run_no}: simulator at {at.isoformat()} (log {log_path})")
        with simulator_process(start=at, stocks=args.stocks, log_path=log_path) as base:
            admin = Admin(base)
            try:
                stocks = admin.stocks()
                codes = sorted(c for c, s in stocks.items() if 1_000 <= s["price"] < 100_000)[: args.codes]
                if not codes:
                    raise SystemExit("no stock priced below 100,000 KRW; raise --stocks")
                keys = create_keys(admin, 0, n)
                log(f"run {run_no}: {n} account(s), rate {rate}/s burst {b}, {args.seconds} s")
                result = asyncio.run(
                    run(
                        base, keys, codes, seconds=args.seconds, rate=rate, burst=b, transport=args.transport,
                        virtual_start=at,
                    )
                )  # fmt: skip
            finally:
                admin.close()
        log(
            f"  {result['orders']} orders, {result['orders_per_second']}/s, p50 {result['p50_ms']} ms, "
            f"p99 {result['p99_ms']} ms, errors {result['errors'] or 0}"
        )
        results.append(result)
    transport = (
        "HTTP/1.1 on 127.0.0.1, httpx API with the httpx_aiohttp transport (KiwoomClient default)"
        if args.transport == "aiohttp"
        else "HTTP/1.1 on 127.0.0.1, httpx's own connection pool"
    )
    print(
        json.dumps(
            {
                "broker": "simulator (separate process, HTTP)",
                "transport": transport,
                "simulator": f"fresh process per run, clock stopped at {at.isoformat()}",
                "order": "kt10000 market buy of 1 share, one in flight per account",
                "codes": codes,
                "latency": "per session.buy call, including the client's rate-limiter wait",
                "results": results,
            },
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
