"""Serve the flows with their schedules from this process (embedded defaults, no work pool).

    .venv/bin/python -m deployments.serve

The same schedules as prefect.yaml: cron in Asia/Seoul on weekdays; the flows skip KRX holidays.
"""

from __future__ import annotations

import os
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
from flows.morning_fill_and_arm import morning_fill_and_arm

TZ = "Asia/Seoul"
# The intraday watch is started at 09:00 and re-checked every 3 minutes of the session: a run finding the
# watch alive leaves at once, one finding it dead takes over (the watcher's lease, tasks/exits.py).
SCHEDULES: dict[str, tuple[Flow[Any, Any], tuple[str, ...]]] = {
    "evening": (evening_signal_and_buy, ("40 15 * * 1-5",)),
    "morning": (morning_fill_and_arm, ("5 9 * * 1-5",)),
    "intraday": (intraday_reconcile, ("*/3 9-14 * * 1-5", "0-30/3 15 * * 1-5")),
    "daily-report": (daily_report, ("30 16 * * 1-5",)),
    "backup": (backup_flow, ("30 18 * * 1-5",)),
}


def deployments() -> list[RunnerDeployment]:
    out = []
    for name, (flow, crons) in SCHEDULES.items():
        deployment = flow.to_deployment(name=name, schedules=[Cron(c, timezone=TZ) for c in crons])
        assert isinstance(deployment, RunnerDeployment)  # sync context: never a coroutine  # noqa: S101
        out.append(deployment)
    return out


def main() -> None:
    serve(*deployments())


if __name__ == "__main__":
    main()
