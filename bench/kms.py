"""KMS Decrypt calls of the broker gateway over several trading days, against one call per request.

    python bench/kms.py --users 20 --days 5 [--requests 100] [--kms local|aws]

Each user registers a simulated Kiwoom account through the vault; then for each trading day (the simulator's
clock moves to 09:00 of the next trading day, so yesterday's broker tokens have expired) every user makes
``--requests`` gateway sessions (a fresh temporary token and session each time, as tasks do), each making
one broker inquiry. Counts the provider's calls by kind (for ``aws``: moto's KMS server over HTTP).

The baseline, ``without_cache``, is what a gateway without the daily token cache would decrypt: one
Decrypt for every request that needs the broker key, that is every inquiry sent to the broker (a gateway
without the cache opens the key to get a token for it). A session's admission is checked in the database
and never opens a key, so it is not in the baseline. Prints JSON: users, days, requests (admissions and broker
calls), broker_calls, decrypt_calls, decrypts_per_user_day, without_cache, saved_percent (with one
Decrypt per user and day and ``--requests`` inquiries, 100 x (1 - 1 / requests)), and the calls by kind at
registration and over the days.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from datetime import time as dtime
from pathlib import Path

from pydantic import SecretStr

from autotrade.broker import KiwoomClient
from autotrade.domain.calendar import next_trading_day, previous_trading_day
from autotrade.domain.krx import KST
from autotrade.runtime import READ
from autotrade.sim.server import free_port, running_simulator
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.vault.gateway import BrokerGateway
from autotrade.vault.keys import KeyStore
from autotrade.vault.kms import AwsKms, KmsProvider, LocalKms
from autotrade.vault.registration import register_user_api
from autotrade.vault.tokens import TemporaryTokens


def log(msg: str) -> None:
    print(f"[kms bench] {msg}", file=sys.stderr, flush=True)


def moto_kms() -> tuple[KmsProvider, object]:
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    client = boto3.client("kms", region_name="ap-northeast-2", endpoint_url=url)
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    return AwsKms(key_id, region="ap-northeast-2", endpoint_url=url), server


async def run(args: argparse.Namespace, work: Path, kms: KmsProvider) -> dict[str, object]:
    first = previous_trading_day(previous_trading_day(datetime.now(KST).date()))
    for _ in range(args.days):
        first = previous_trading_day(first)
    start = datetime.combine(first, dtime(9, 0), tzinfo=KST)
    with running_simulator(seed=4, start=start) as sim:
        url = f"sqlite:///{work / 'bench.db'}"
        upgrade(url)
        db = Database(url)
        client = KiwoomClient(sim.base_url, timeout=10, rate_per_second=1000, burst=1000)
        gw = BrokerGateway(
            db, KeyStore(db, kms), client, TemporaryTokens(db, os.urandom(32)), cache_key=os.urandom(32),
            clock=sim.engine.read_clock,
        )  # fmt: skip
        users = []
        for i in range(args.users):
            user, account = f"kms{i:04d}", f"{6_000_000_000 + i:010d}"
            sim.admin.create_account(account, user, 10_000_000)
            key = sim.admin.create_appkey(account)
            await register_user_api(gw, user, SecretStr(key["appkey"]), SecretStr(key["secretkey"]), account,
                                    daily_limit=1_000_000)  # fmt: skip
            users.append((user, account))
        base = kms.calls["Decrypt"]
        at_registration = dict(kms.calls)
        requests = 0
        calls = 0
        day = first
        started = time.perf_counter()
        for d in range(args.days):
            day = next_trading_day(day)
            sim.admin.set_clock(datetime.combine(day, dtime(9, 0), tzinfo=KST))
            for user, account in users:
                for _ in range(args.requests):
                    session = await gw.session(gw.get_temporary_token(user, account, READ), origin="bench")
                    await session.deposit()
                    calls += 1  # the inquiry: it needs the broker token, so the key
                    requests += 2  # the session's admission (no key needed) and the inquiry
            log(f"day {d + 1}/{args.days} {day}: {kms.calls['Decrypt'] - base} Decrypt calls so far")
        seconds = time.perf_counter() - started
        await client.aclose()
        db.dispose()
    decrypts = kms.calls["Decrypt"] - base
    without = calls  # a gateway that opened the key for every call that needs it (every broker call)
    return {
        "users": args.users, "days": args.days, "requests": requests, "broker_calls": calls,
        "decrypt_calls": decrypts, "decrypts_per_user_day": round(decrypts / (args.users * args.days), 3),
        "without_cache": without, "saved_percent": round(100 * (1 - decrypts / without), 3),
        "kms": args.kms, "seconds": round(seconds, 2),
        "calls_by_kind_registration": at_registration,
        "calls_by_kind_trading_days": {k: v - at_registration.get(k, 0) for k, v in kms.calls.items()},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--requests", type=int, default=50, help="sessions per user per day (2 requests each)")
    ap.add_argument("--kms", choices=["local", "aws"], default="aws")
    args = ap.parse_args()
    if args.users < 1 or args.days < 1 or args.requests < 1:
        ap.error("--users, --days and --requests must be positive")
    work = Path(tempfile.mkdtemp(prefix="autotrade-kms-bench-"))
    server = None
    if args.kms == "aws":
        kms, server = moto_kms()
    else:
        kms = LocalKms(work / "master.key")
    try:
        print(json.dumps(asyncio.run(run(args, work, kms))))
    finally:
        if server is not None:
            server.stop()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
