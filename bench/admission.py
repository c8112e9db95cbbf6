"""The gateway admission's cost per request (the one read and one insert every request makes), with the
security rules' shared windows counted inside the read, against the admission of an earlier commit.

    python bench/admission.py [--url sqlite:///var/bench-admission.db | postgresql+psycopg2://...]
                              [--history 200000] [--requests 2000] [--before 736cbb7]

The access log is first filled with ``--history`` rows spread over 1,000 accounts and the last 30 days
(the measured account gets its share, plus 100 rows in the last 10 seconds: a busy key inside the burst
window). Then one account's reads and sells are admitted ``--requests`` times each, ``--step`` seconds
apart on the gateway's clock, by the current gateway and by the gateway of ``--before`` (loaded from git,
same database), taking turns request by request. Prints JSON: microseconds per
admission (median and p95) by kind, before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa
from pydantic import SecretStr

from autotrade.broker import KiwoomClient
from autotrade.domain.exits import StrategyStatus
from autotrade.domain.krx import KST
from autotrade.runtime import SELL
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import AccessLog, ThreeTierStrategy
from autotrade.vault.keys import KeyStore
from autotrade.vault.kms import LocalKms
from autotrade.vault.tokens import TemporaryTokens

ACCOUNT, USER = "5900000000", "bench-user"


def gateway_module(commit: str | None) -> ModuleType:
    if commit is None:
        import autotrade.vault.gateway as current

        return current
    source = subprocess.run(
        ["git", "show", f"{commit}:autotrade/vault/gateway.py"], check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "gateway_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("gateway_before", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the gateway of {commit}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gateway_before"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def fill(db: Database, keys: KeyStore, history: int, now: datetime) -> None:
    for n in range(1000):
        keys.store(f"u{n}", f"58{n:08d}", SecretStr("k"), SecretStr("s"), account_name=None,
                   daily_limit=10**7)  # fmt: skip
    keys.store(USER, ACCOUNT, SecretStr("k"), SecretStr("s"), account_name=None, daily_limit=10**7)
    rows: list[dict[str, Any]] = []
    for i in range(history):
        account = ACCOUNT if i % 1000 == 0 else f"58{i % 1000:08d}"
        at = now - timedelta(seconds=(i * 2_592_000 // history) + 11)
        rows.append({"at": at, "user_id": "u", "account_no": account, "token_id": f"t{i % 5000}",
                     "action": "account:read", "origin": "prefect", "allowed": i % 50 != 0,
                     "reason": None})  # fmt: skip
    rows += [{"at": now - timedelta(seconds=i / 10), "user_id": USER, "account_no": ACCOUNT, "token_id": "t",
              "action": "account:read", "origin": "prefect", "allowed": True, "reason": None}
             for i in range(100)]  # fmt: skip
    with db.transaction() as conn:
        for start in range(0, len(rows), 10_000):
            conn.execute(sa.insert(AccessLog), rows[start : start + 10_000])
    with db.unit_of_work() as s:
        s.add(ThreeTierStrategy(
            user_id=USER, account_no=ACCOUNT, buy_intent_key="bench", code="005930", name="삼성전자",
            quantity=10, entry_price=50_000, entry_date=now.date(), stop_loss_price=47_500,
            preserve_price=52_000, take_profit_price=54_000, held_quantity=10, preserve_target=5,
            status=StrategyStatus.ACTIVE, armed_at=now,
        ))  # fmt: skip


def measure(modules: dict[str, ModuleType], db: Database, keys: KeyStore, tokens: TemporaryTokens, n: int,
            start: datetime, step: float) -> dict[str, dict[str, dict[str, float]]]:  # fmt: skip
    """``n`` admissions of each kind by each gateway, taking turns request by request (a loaded machine
    slows both alike), each gateway's clock moving ``step`` seconds between its requests (a key making
    1/step requests a second). The later gateway runs an hour after the earlier one, so each one's
    windows hold only its own requests."""
    client = KiwoomClient("http://127.0.0.1:9", timeout=1)
    gateways = []
    for i, (name, module) in enumerate(modules.items()):
        clock = [start + timedelta(hours=i)]
        gw = module.BrokerGateway(db, keys, client, tokens, cache_key=b"k" * 32,
                                  clock=lambda c=clock: c[0])  # fmt: skip
        claims = tokens.verify(gw.get_temporary_token(USER, ACCOUNT, SELL), now=clock[0], check_revoked=False)
        knows_code = "quantity" in module.BrokerGateway._check_and_log.__code__.co_varnames
        gateways.append((name, gw, clock, claims, knows_code))
    out: dict[str, dict[str, dict[str, float]]] = {name: {} for name in modules}
    for kind, action, extra in [("read", "account:read", ()), ("sell", "order:sell", ("005930", 5))]:
        times: dict[str, list[float]] = {name: [] for name in modules}
        for _ in range(n):
            for name, gw, clock, claims, knows_code in gateways:
                clock[0] += timedelta(seconds=step)
                t0 = time.perf_counter()
                gw._check_and_log(claims, action, "prefect", None, clock[0], *(extra if knows_code else ()))
                times[name].append((time.perf_counter() - t0) * 1e6)
        for name, ts in times.items():
            ts.sort()
            median, p95 = statistics.median(ts), ts[int(n * 0.95)]
            out[name][kind] = {"median_us": round(median, 1), "p95_us": round(p95, 1)}
    asyncio.run(client.aclose())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None)
    p.add_argument("--history", type=int, default=200_000)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--before", default="736cbb7", help="the commit whose admission is compared")
    p.add_argument("--step", type=float, default=0.1, help="seconds between one key's requests")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    url = a.url or f"sqlite:///{tmp / 'admission.db'}"
    upgrade(url)
    db = Database(url)
    keys = KeyStore(db, LocalKms(tmp / "master.key"))
    tokens = TemporaryTokens(db, b"s" * 32, timedelta(hours=8))
    now = datetime(2026, 11, 24, 10, 0, tzinfo=KST).astimezone(UTC)
    fill(db, keys, a.history, now)
    result = {"backend": db.engine.dialect.name, "history_rows": a.history, "requests": a.requests,
              "requests_per_second_of_the_key": round(1 / a.step, 1),
              **measure({"before": gateway_module(a.before), "after": gateway_module(None)}, db, keys, tokens,
                        a.requests, now, a.step)}  # fmt: skip
    json.dump(result, sys.stdout, indent=1)
    print()
    db.dispose()


if __name__ == "__main__":
    main()
