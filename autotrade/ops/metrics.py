"""Prometheus metrics of the API process and readiness.

What ``/metrics`` exposes (a registry of its own per app, ``prometheus-client``):

- ``autotrade_api_request_seconds{method,route,status}``: a histogram of this API's request latency.
- Gauges read from the database at each scrape, for the current trading day (KST) so a scrape stays cheap
  however long the ledger grows, and the same from every process (the workers write the database):
  ``autotrade_orders{side,status}`` (order intents of the day by side and outcome),
  ``autotrade_order_shares{side,kind}`` (ordered and filled shares of orders that reached the broker),
  ``autotrade_fill_rate`` (filled / ordered shares), ``autotrade_fills`` (fill rows),
  ``autotrade_exit_tier_firings{tier}`` (sells of the day by exit reason),
  ``autotrade_gateway_requests{action,allowed}`` (the access log),
  ``autotrade_kill_switch_events`` and ``autotrade_security_events{rule}``,
  ``autotrade_notification_failures{channel}``.

- What the processes that trade recorded (autotrade/ops/worker_metrics.py: Prefect workers and flow run
  processes write ``prometheus-client`` multiprocess files to ``Settings.metrics_dir``, one folder per
  machine, which every scrape reads): ``autotrade_broker_responses_total{api_id,return_code}``,
  ``autotrade_broker_request_seconds{api_id}`` (histogram), ``autotrade_tick_lag_seconds`` (histogram) and
  ``autotrade_exit_tier_fired_total{tier}``.

- Flow runs by state, read from the Prefect API when one is configured (``PREFECT_API_URL``):
  ``autotrade_flow_runs{flow,state}`` counts the runs of the current KST day (expected to start that day,
  whatever their deployment) by flow name and state type (``COMPLETED``, ``FAILED``, ``SCHEDULED`` ...), and
  ``autotrade_prefect_up`` is 1. Read with a short timeout (2 s) and kept 30 s, so a scrape stays cheap and
  Prefect is asked at most twice a minute; when Prefect does not answer, the counts are left out and
  ``autotrade_prefect_up`` is 0. With no Prefect API configured (the embedded mode) neither is exported.

The gateway's own checks of a request, apart from the broker call, are in the processes' folder too:
``autotrade_gateway_admit_seconds{action,allowed}`` (histogram, autotrade/ops/worker_metrics.py).

``/ready``: the database answers ``SELECT 1``, and the broker's REST and WebSocket hosts accept a TCP
connection within ``wait`` seconds; 503 with the failed checks otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time as monotonic_time
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autotrade.domain.krx import KST
from autotrade.store.db import Database
from autotrade.store.models import (
    AccessLog,
    FillRow,
    NotificationFailure,
    OrderIntentRow,
    SecurityEvent,
    TradeRecordRow,
)


def today_kst() -> date:
    return datetime.now(KST).date()


class LedgerCollector(Collector):
    """Today's figures from the database at each scrape."""

    def __init__(self, db: Database, day: Callable[[], date] = today_kst) -> None:
        self.db = db
        self.day = day

    def collect(self) -> Iterator[Metric]:
        day = self.day()
        start = datetime.combine(day, time(0), tzinfo=KST)
        end = start + timedelta(days=1)
        orders = GaugeMetricFamily("autotrade_orders", "order intents of the day", labels=["side", "status"])
        shares = GaugeMetricFamily("autotrade_order_shares", "shares of the day's orders at the broker",
                                   labels=["side", "kind"])  # fmt: skip
        tiers = GaugeMetricFamily(
            "autotrade_exit_tier_firings", "sells of the day by exit reason", labels=["tier"]
        )
        requests = GaugeMetricFamily("autotrade_gateway_requests", "gateway requests of the day",
                                     labels=["action", "allowed"])  # fmt: skip
        rules = GaugeMetricFamily("autotrade_security_events", "security events of the day", labels=["rule"])
        failures = GaugeMetricFamily("autotrade_notification_failures", "undelivered notices of the day",
                                     labels=["channel"])  # fmt: skip
        with self.db.unit_of_work() as s:
            ordered = filled = 0
            for side, status, n in s.execute(
                sa.select(OrderIntentRow.side, OrderIntentRow.status, sa.func.count())
                .where(OrderIntentRow.trading_day == day)
                .group_by(OrderIntentRow.side, OrderIntentRow.status)
            ):
                orders.add_metric([side.value, status.value], n)
            for side, qty, done in s.execute(
                sa.select(OrderIntentRow.side, sa.func.sum(OrderIntentRow.quantity),
                          sa.func.sum(OrderIntentRow.filled_quantity))
                .where(OrderIntentRow.trading_day == day, OrderIntentRow.order_no.is_not(None))
                .group_by(OrderIntentRow.side)
            ):  # fmt: skip
                shares.add_metric([side.value, "ordered"], int(qty or 0))
                shares.add_metric([side.value, "filled"], int(done or 0))
                ordered, filled = ordered + int(qty or 0), filled + int(done or 0)
            fills = s.scalar(
                sa.select(sa.func.count(FillRow.id)).where(
                    FillRow.executed_at >= start, FillRow.executed_at < end
                )
            )
            for reason, n in s.execute(
                sa.select(TradeRecordRow.exit_reason, sa.func.count())
                .where(TradeRecordRow.trading_day == day, TradeRecordRow.exit_reason.is_not(None))
                .group_by(TradeRecordRow.exit_reason)
            ):
                tiers.add_metric([reason.value], n)
            for action, allowed, n in s.execute(
                sa.select(AccessLog.action, AccessLog.allowed, sa.func.count())
                .where(AccessLog.at >= start, AccessLog.at < end)
                .group_by(AccessLog.action, AccessLog.allowed)
            ):
                requests.add_metric([action, "true" if allowed else "false"], n)
            kills = 0
            for rule, action_taken, n in s.execute(
                sa.select(SecurityEvent.rule, SecurityEvent.action_taken, sa.func.count())
                .where(SecurityEvent.at >= start, SecurityEvent.at < end)
                .group_by(SecurityEvent.rule, SecurityEvent.action_taken)
            ):
                rules.add_metric([rule], n)
                kills += n if "DISABLED" in (action_taken or "") else 0
            for channel, n in s.execute(
                sa.select(NotificationFailure.channel, sa.func.count())
                .where(NotificationFailure.at >= start, NotificationFailure.at < end)
                .group_by(NotificationFailure.channel)
            ):
                failures.add_metric([channel], n)
        yield orders
        yield shares
        yield GaugeMetricFamily("autotrade_fill_rate", "filled / ordered shares, orders at the broker",
                                value=filled / ordered if ordered else 0.0)  # fmt: skip
        yield GaugeMetricFamily("autotrade_fills", "fills of the day", value=fills or 0)
        yield tiers
        yield requests
        yield GaugeMetricFamily("autotrade_kill_switch_events", "keys disabled today", value=kills)
        yield rules
        yield failures


class WorkerCollector(Collector):
    """What every process that trades wrote to the metrics folder, summed, at each scrape."""

    def __init__(self, folder: Callable[[], Path]) -> None:
        self.folder = folder

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.multiprocess import MultiProcessCollector

        folder = self.folder()
        if folder.is_dir():
            yield from MultiProcessCollector(None, path=str(folder)).collect()  # type: ignore[no-untyped-call]


log = logging.getLogger(__name__)


def _configured_prefect_api() -> str | None:
    """``PREFECT_API_URL`` from the environment, else Prefect's own settings (a profile); None: not set."""
    url = os.environ.get("PREFECT_API_URL")
    if url is None:
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
    return url.rstrip("/") if url else None


def _prefect_headers() -> dict[str, str]:
    """The credentials Prefect's own client would send (a Cloud API key or a server's basic auth)."""
    import base64

    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY

    def plain(value: object) -> str:
        secret = getattr(value, "get_secret_value", None)
        return str(secret() if secret else value or "")

    key, auth = plain(PREFECT_API_KEY.value()), plain(PREFECT_API_AUTH_STRING.value())
    if key:
        return {"Authorization": f"Bearer {key}"}
    if auth:
        return {"Authorization": f"Basic {base64.b64encode(auth.encode()).decode()}"}
    return {}


class PrefectCollector(Collector):
    """The day's flow runs by flow name and state type from the Prefect API, kept ``ttl`` seconds."""

    PAGE = 200

    def __init__(
        self,
        day: Callable[[], date] = today_kst,
        api_url: Callable[[], str | None] = _configured_prefect_api,
        *,
        timeout: float = 2.0,
        ttl: float = 30.0,
        clock: Callable[[], float] = monotonic_time.monotonic,
    ) -> None:
        self.day, self.api_url, self.timeout, self.ttl, self.clock = day, api_url, timeout, ttl, clock
        self._lock = threading.Lock()
        self._kept: tuple[float, str, dict[tuple[str, str], int] | None] | None = None

    def describe(self) -> Iterator[Metric]:
        """The names, for the registry's check at registration: no read of Prefect then."""
        yield GaugeMetricFamily("autotrade_flow_runs", "", labels=["flow", "state"])
        yield GaugeMetricFamily("autotrade_prefect_up", "")

    def collect(self) -> Iterator[Metric]:
        api = self.api_url()
        if not api:
            return
        with self._lock:  # scrapes at once ask Prefect once
            kept = self._kept
            if kept is None or kept[1] != api or self.clock() - kept[0] >= self.ttl:
                kept = self._kept = (self.clock(), api, self._read(api))
        counts = kept[2]
        if counts is not None:
            runs = GaugeMetricFamily("autotrade_flow_runs", "flow runs of the day by flow and state type",
                                     labels=["flow", "state"])  # fmt: skip
            for (flow, state), n in sorted(counts.items()):
                runs.add_metric([flow, state], n)
            yield runs
        up = "the Prefect API answered the last read (1) or not (0)"
        yield GaugeMetricFamily("autotrade_prefect_up", up, value=1 if counts is not None else 0)

    def _read(self, api: str) -> dict[tuple[str, str], int] | None:
        import httpx

        start = datetime.combine(self.day(), time(0), tzinfo=KST)
        window = {"after_": start.isoformat(), "before_": (start + timedelta(days=1)).isoformat()}
        deadline = self.clock() + self.timeout
        try:
            with httpx.Client(base_url=api, timeout=self.timeout, headers=_prefect_headers()) as http:
                runs: list[dict[str, object]] = []
                while True:  # a day is a few hundred runs: pages of 200 until a short one
                    page = http.post("/flow_runs/filter", json={
                        "flow_runs": {"expected_start_time": window}, "sort": "ID_DESC",
                        "limit": self.PAGE, "offset": len(runs),
                    })  # fmt: skip
                    page.raise_for_status()
                    got = page.json()
                    runs += got
                    if len(got) < self.PAGE or self.clock() > deadline:
                        break
                flow_ids = sorted({str(r["flow_id"]) for r in runs})
                names: dict[str, str] = {}
                if flow_ids:
                    found = http.post("/flows/filter", json={"flows": {"id": {"any_": flow_ids}}})
                    found.raise_for_status()
                    names = {str(f["id"]): str(f["name"]) for f in found.json()}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("flow runs by state unavailable: %s", type(exc).__name__)
            return None
        counts: dict[tuple[str, str], int] = {}
        for r in runs:
            key = (names.get(str(r["flow_id"]), str(r["flow_id"])), str(r.get("state_type") or "NONE"))
            counts[key] = counts.get(key, 0) + 1
        return counts


def _configured_folder() -> Path:
    from autotrade.config import get_settings

    return get_settings().metrics_dir


def api_registry(
    db: Database, day: Callable[[], date] = today_kst, folder: Callable[[], Path] = _configured_folder
) -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(LedgerCollector(db, day))
    registry.register(WorkerCollector(folder))
    registry.register(PrefectCollector(day))
    latency = Histogram("autotrade_api_request_seconds", "API request latency", ["method", "route", "status"],
                        registry=registry)  # fmt: skip
    return registry, latency


async def readiness(db: Database, rest_url: str, ws_url: str, wait: float = 2.0) -> dict[str, bool]:
    """Each check's outcome: the database, the broker's REST host, the price feed's host."""

    def database() -> bool:
        try:
            with db.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    async def reachable(url: str) -> bool:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), wait)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    db_ok = await asyncio.to_thread(database)
    broker_ok, feed_ok = await asyncio.gather(reachable(rest_url), reachable(ws_url))
    return {"database": db_ok, "broker": broker_ok, "feed": feed_ok}
