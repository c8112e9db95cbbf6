"""A simulated month of broker faults and process crashes with nothing lost or doubled.

    python bench/faults.py [--users 10] [--days 20] [--fault-rate 0.05] [--crash-rate 0.03] [--seed 1]
                           [--access gateway|direct] [--resting-stops]

Runs ``tests/reliability/scenario.py`` (the short version of it is in the test suite) against the simulator
on SQLite: every broker fault kind (500, 429, latency, dropped answers after accept, token expiry, WebSocket
disconnects) at the given rate, crashes drawn at every point of the order protocol, each failed step re-run
by a fresh process. Accounts are reached through the vault's gateway (``--access direct``: a token manager
per account instead); each trading session also reads the WebSocket price feed. ``--resting-stops``: a
stop-limit sell rests at the broker for every position (the ``resting_stop`` setting).
Prints JSON: faults injected by kind, crash points covered, the feed's reconnects and ticks, orders
intended/placed/duplicated/lost, mismatches (traceability, limits, broker agreement, tiers against prices),
the gateway's access log (rows, refusals, security events), leaks of app keys, secrets and broker tokens in
the database or in the run's log records; ``keys_wrongly_disabled`` (keys disabled in the month, where
nobody attacks), ``exits_missed`` (a stop or take-profit level crossed on the simulator's own price path,
every step, while a position was open, and the position not sold that day), ``buys_not_sent`` and
``sells_not_sent`` (intents that never reached the broker, or not known to: a sell so is a lost exit),
resting stops placed and filled. Exits 1 when anything was duplicated, lost, mismatched, refused by the
gateway or leaked, a key was wrongly disabled, an exit missed or a sell not sent.

Then the attacks of ``tests/reliability/attacks.py`` (also in the suite): stolen, expired, tampered and
replayed tokens, cross-user requests, limits, malformed and oversized input on the API, scans and settings,
every kill-switch rule. Adds attacks tried/succeeded by kind and the kill-switch seconds; exits 1 when one
got through or the kill switch took a minute. Stays on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/ holds the harness

from tests.reliability.attacks import run_attacks
from tests.reliability.scenario import run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--days", type=int, default=20)
    ap.add_argument("--fault-rate", type=float, default=0.05)
    ap.add_argument("--crash-rate", type=float, default=0.03)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--access", choices=("gateway", "direct"), default="gateway")
    ap.add_argument("--resting-stops", action="store_true", help="a stop-limit sell rests at the broker")
    args = ap.parse_args()
    if args.users < 1 or args.days < 1 or not (0 <= args.fault_rate < 1 and 0 <= args.crash_rate < 1):
        ap.error("--users and --days must be positive, the rates between 0 and 1")
    result = asyncio.run(
        run(users=args.users, days=args.days, fault_rate=args.fault_rate, crash_rate=args.crash_rate,
            seed=args.seed, access=args.access, resting_stops=args.resting_stops,
            progress=lambda m: print(f"[faults bench] {m}", file=sys.stderr, flush=True))
    )  # fmt: skip
    # The month's figures are printed even when the attacks step breaks (an error is a failed bench).
    print(json.dumps({"month": result}, ensure_ascii=False), file=sys.stderr, flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="autotrade-attacks-") as work:
            attacks = asyncio.run(
                run_attacks(db_url=f"sqlite:///{work}/attacks.db", work=Path(work), seed=args.seed,
                            progress=lambda m: print(f"[faults bench] attacks: {m}", file=sys.stderr,
                                                     flush=True))
            )  # fmt: skip
    except Exception as exc:
        result["attacks_error"] = f"{type(exc).__name__}: {exc}"[:300]
        print(json.dumps(result, ensure_ascii=False))
        sys.exit(1)
    result |= {
        "attacks_tried": attacks["attacks_tried"], "attacks_succeeded": attacks["attacks_succeeded"],
        "attacks_total_tried": attacks["attacks_total_tried"],
        "attacks_total_succeeded": attacks["attacks_total_succeeded"],
        "attack_details": attacks["details"], "kill_switch_seconds": attacks["kill_switch_seconds"],
        "attack_seconds": attacks.get("seconds"),
    }  # fmt: skip
    print(json.dumps(result, ensure_ascii=False))
    bad = (
        result["orders_duplicated"] or result["orders_lost"] or result["mismatches"] or result["leaks"]
        or result["access_refused"] or result["keys_not_active"] or result["attacks_total_succeeded"]
        or result["keys_wrongly_disabled"] or result["exits_missed"] or result["sells_not_sent"]
        or not result["kill_switch_seconds"] < 60
    )  # fmt: skip
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
