"""Serve the flows with their schedules from this process (no work pool), for a single machine or a trial.

    prefect server start                      # in another terminal: it is what schedules the runs
    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python -m deployments.serve

The same schedules as prefect.yaml (cron in Asia/Seoul: the trading day's on weekdays, skipping KRX
holidays; the weekly review on Saturday, the monthly review on the 1st) under
deployment names of its own (``evening-local`` ...), so the production deployments that ``prefect deploy``
made are never touched: when this process stops (Ctrl-C, SIGTERM) it pauses only its own schedules.
Without ``PREFECT_API_URL`` it refuses to start: Prefect's temporary in-process server schedules nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from prefect import Flow, serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from flows.backup import backup_flow
from flows.daily_report import daily_report
from flows.evening_signal_and_buy import evening_signal_and_buy
from flows.intraday_reconcile import intraday_reconcile
from flows.monthly_review import monthly_review_flow
from flows.morning_fill_and_arm import morning_fill_and_arm
from flows.place_buys import place_buys
from flows.weekly_review import weekly_review_flow

TZ = "Asia/Seoul"
# The intraday watch is started at 09:00 and re-checked every 3 minutes of the session: a run finding the
# watch alive leaves at once, one finding it dead takes over (the watcher's lease, tasks/exits.py).
SCHEDULES: dict[str, tuple[Flow[Any, Any], tuple[str, ...]]] = {
    "evening": (evening_signal_and_buy, ("40 15 * * 1-5",)),
    "morning": (morning_fill_and_arm, ("5 9 * * 1-5",)),
    "intraday": (intraday_reconcile, ("*/3 9-14 * * 1-5", "0-30/3 15 * * 1-5")),
    "daily-report": (daily_report, ("30 16 * * 1-5",)),
    "backup": (backup_flow, ("30 18 * * 1-5",)),
    "weekly-review": (weekly_review_flow, ("0 9 * * 6",)),
    "monthly-review": (monthly_review_flow, ("0 7 1 * *",)),
}


# Deployments that runs start, with no schedule of their own: the evening's shares of buys, when
# AUTOTRADE_EVENING_FANOUT=deployment (served here: AUTOTRADE_EVENING_FANOUT_DEPLOYMENT is then
# place_buys/place-buys-local).
STARTED_BY_RUNS: dict[str, Flow[Any, Any]] = {"place-buys": place_buys}

LOCAL_SUFFIX = "-local"  # never a production deployment's name (prefect.yaml)


def deployments() -> list[RunnerDeployment]:
    out = []
    for name, (flow, crons) in SCHEDULES.items():
        deployment = flow.to_deployment(
            name=name + LOCAL_SUFFIX, schedules=[Cron(c, timezone=TZ) for c in crons]
        )
        assert isinstance(deployment, RunnerDeployment)  # sync context: never a coroutine  # noqa: S101
        out.append(deployment)
    for name, flow in STARTED_BY_RUNS.items():
        deployment = flow.to_deployment(name=name + LOCAL_SUFFIX)
        assert isinstance(deployment, RunnerDeployment)  # noqa: S101
        out.append(deployment)
    return out


def main() -> int:
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        print(
            "PREFECT_API_URL is not set: scheduled runs need a running `prefect server start` "
            "(then PREFECT_API_URL=http://127.0.0.1:4200/api); the temporary in-process server schedules "
            "nothing.",
            file=sys.stderr,
        )
        return 2
    # Ctrl-C stops it even when started from a shell that had SIGINT ignored (a background job, nohup)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    served = deployments()
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C
            serve(*served)
    finally:
        pause_own(served)  # the runner pauses them too, but not when stopped before it started polling
    return 0


def pause_own(served: list[RunnerDeployment]) -> None:
    """Pause this process's own deployments (and never another's): no run is scheduled for a runner that
    is gone."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for d in served:
            try:
                found = client.read_deployment_by_name(f"{d.flow_name}/{d.name}")
                client.pause_deployment(found.id)
            except Exception as exc:  # stopping must not fail on one of them
                print(f"could not pause {d.name}: {type(exc).__name__}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
