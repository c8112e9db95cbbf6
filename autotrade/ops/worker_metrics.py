"""Metrics of the processes that trade (Prefect workers, flow run processes, the embedded API running a flow).

Each such process writes its metrics to files in one folder per machine, ``Settings.metrics_dir``
(``AUTOTRADE_METRICS_DIR``, default ``metrics`` under the home): ``prometheus-client``'s multiprocess mode.
The API's ``/metrics`` reads that folder (:func:`folder_collector`), so one scrape shows what every
process of the machine recorded since the folder was last emptied (counters and histograms are summed over
processes, dead ones included). A process's counts reach its files every :data:`WRITE_SECONDS` and at
exit (a scrape sees another process's calls up to a second late; one killed loses its last second). A
worker on another machine writes a folder of its own that no API reads: run an API there too, or point
``AUTOTRADE_METRICS_DIR`` of both at the same folder on one machine.

:func:`enable` (called by :func:`autotrade.runtime.build_runtime`, first thing in every process that trades)
names the folder (once; a later call only points the response times at the newest database). Only these
metrics go to it, whatever else the process measures: the API's own latency histogram stays in its app's
registry. Before :func:`enable`, or when it is never called (unit tests), the
metrics count in the process's memory only.

- ``autotrade_broker_responses_total{api_id,return_code}``: every answer of the broker's REST API with an
  envelope (``return_code``; ``http_<status>`` for an HTTP error without one, ``none`` for a success without
  one), and ``transport`` for a call that got no answer (refused, timed out, dropped).
- ``autotrade_broker_request_seconds{api_id}``: the broker call's latency, request sent to answer read
  (the rate limiter's wait not included).
- ``autotrade_tick_lag_seconds``: from a tick's trade time (the feed's, or a polled quote's) to the price
  watch deciding on it, on the runtime's clock (the simulator's virtual time in the demo and the tests,
  where a fast clock stretches it by the speed-up).
- ``autotrade_exit_tier_fired_total{tier}``: tiers fired by the price watch (a sell intent recorded).
- ``autotrade_gateway_admit_seconds{action,allowed}``: the vault gateway's own checks of a request (key
  usable, token, scope, the security rules, the access-log entry), without the broker call that follows.

The broker's response times are also added up per trading day and TR (``broker_latency``) for the daily
report's "average broker response time": every :data:`FLUSH_SECONDS` by a background thread, and when the
process exits normally (a killed process loses at most the last few seconds of calls).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

from autotrade.domain.krx import KST

log = logging.getLogger(__name__)

FLUSH_SECONDS = 10.0
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
TICK_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)

WRITE_SECONDS = 1.0  # how often a process's counts reach its metrics files

_lock = threading.Lock()
_file_values: Any = None  # the multiprocess value class, once enable() named a folder
_buffered: list[_Buffered] = []  # every value this process writes to the folder
_buffered_lock = threading.Lock()  # not _lock: enable() makes values while it holds that one


class _Buffered:
    """A metric's value in the metrics folder whose increments add up in this process's memory and reach
    its file every :data:`WRITE_SECONDS` (a background thread), when this process reads the folder, and at
    exit: a file write (a lock, the process id asked of the system, the mmap) cost about 4 % of the evening's
    CPU per order, several values an order. A process killed loses at most its last second of counts."""

    __slots__ = ("_file", "_lock", "_pending")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._file = _file_values(*args, **kwargs)
        self._pending = 0.0
        self._lock = threading.Lock()
        with _buffered_lock:
            _buffered.append(self)

    def inc(self, amount: float) -> None:
        with self._lock:
            self._pending += amount

    def write(self) -> None:
        with self._lock:
            amount, self._pending = self._pending, 0.0
            if amount:
                self._file.inc(amount)

    def set(self, value: float, timestamp: float | None = None) -> None:
        with self._lock:
            self._pending = 0.0
            self._file.set(value, timestamp)

    def get(self) -> float:
        with self._lock:
            return float(self._file.get()) + self._pending

    def set_exemplar(self, exemplar: Any) -> None:
        return None

    def get_exemplar(self) -> None:
        return None


def write_counts() -> None:
    """Write this process's counts not yet in the metrics folder."""
    with _buffered_lock:
        pending = list(_buffered)
    for value in pending:
        value.write()


def _value_class() -> Any:
    return _Buffered if _file_values is not None else values.MutexValue


class _FileCounter(Counter):
    """A counter written to the metrics folder once :func:`enable` named one (in memory before)."""

    def _metric_init(self) -> None:
        self._value = _value_class()(self._type, self._name, self._name + "_total", self._labelnames,
                                     self._labelvalues, self._documentation)  # fmt: skip
        self._created = time.time()


class _FileHistogram(Histogram):
    """A histogram written to the metrics folder once :func:`enable` named one (in memory before)."""

    def _metric_init(self) -> None:
        cls = _value_class()
        self._buckets = []
        self._created = time.time()
        self._sum = cls(self._type, self._name, self._name + "_sum", self._labelnames, self._labelvalues,
                        self._documentation)  # fmt: skip
        names = (*self._labelnames, "le")
        for bound in self._upper_bounds:
            labels = (*self._labelvalues, floatToGoString(bound))  # type: ignore[no-untyped-call]
            self._buckets.append(
                cls(self._type, self._name, self._name + "_bucket", names, labels, self._documentation)
            )


# registry=None: these live in the metrics folder, read by folder_collector(), never in a process registry.
BROKER_RESPONSES = _FileCounter("autotrade_broker_responses", "broker REST answers by return code",
                                ["api_id", "return_code"], registry=None)  # fmt: skip
BROKER_SECONDS = _FileHistogram("autotrade_broker_request_seconds", "broker REST call latency", ["api_id"],
                                buckets=LATENCY_BUCKETS, registry=None)  # fmt: skip
TICK_LAG = _FileHistogram("autotrade_tick_lag_seconds", "trade time of a tick to the exit decision on it",
                          buckets=TICK_LAG_BUCKETS, registry=None)  # fmt: skip
TIER_FIRED = _FileCounter("autotrade_exit_tier_fired", "tiers fired by the price watch", ["tier"],
                          registry=None)  # fmt: skip
GATEWAY_SECONDS = _FileHistogram("autotrade_gateway_admit_seconds",
                                 "the vault gateway's own checks of a request (key, token, scope, rules)",
                                 ["action", "allowed"], buckets=LATENCY_BUCKETS, registry=None)  # fmt: skip


class LatencyBook:
    """The broker's response times not yet added to ``broker_latency``: per (trading day, api-id) the
    calls, their total and their longest, in milliseconds. Totals are summed unrounded and saved as whole
    milliseconds, the fraction carried to the next save: sub-millisecond answers (a broker next door) add
    up instead of each counting as 0."""

    def __init__(self) -> None:
        self.pending: dict[tuple[date, str], list[float]] = {}
        self.carried: dict[tuple[date, str], float] = {}
        self.lock = threading.Lock()

    def add(self, day: date, api_id: str, ms: float) -> None:
        with self.lock:
            row = self.pending.setdefault((day, api_id), [0, 0.0, 0.0])
            row[0] += 1
            row[1] += ms
            row[2] = max(row[2], ms)

    def take(self) -> dict[tuple[date, str], list[int]]:
        with self.lock:
            taken, self.pending = self.pending, {}
            out: dict[tuple[date, str], list[int]] = {}
            for key, (calls, total, longest) in taken.items():
                exact = total + self.carried.pop(key, 0.0)
                whole = int(exact)
                self.carried[key] = exact - whole
                out[key] = [int(calls), whole, round(longest)]
        return out


_book = LatencyBook()
_sink: tuple[Any, Callable[[], datetime]] | None = None  # (Database, clock) once enable() is called


# Each label set's child, found once: labels() checks and locks on every call.
_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (metric, *labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def observe_broker(api_id: str, return_code: str, seconds: float | None) -> None:
    """One broker call: its answer's code and, when an answer came, how long it took."""
    _child(BROKER_RESPONSES, api_id, return_code).inc()
    if seconds is None:
        return
    _child(BROKER_SECONDS, api_id).observe(seconds)
    if _sink is not None:
        _book.add(_sink[1]().astimezone(KST).date(), api_id, seconds * 1000)


def observe_tick(traded_at: datetime, decided_at: datetime) -> None:
    TICK_LAG.observe(max(0.0, (decided_at - traded_at).total_seconds()))


def observe_gateway(action: str, allowed: bool, seconds: float) -> None:
    """One request through the vault gateway's checks, before the broker call (timed on its own, apart)."""
    _child(GATEWAY_SECONDS, action, "true" if allowed else "false").observe(seconds)


def tier_fired(tier: Any) -> None:
    _child(TIER_FIRED, getattr(tier, "value", str(tier))).inc()


def enable(folder: Path, db: Any = None, clock: Callable[[], datetime] | None = None) -> None:
    """Write this process's metrics to ``folder`` from now on, and (given a database) add the broker's
    response times to ``broker_latency`` every :data:`FLUSH_SECONDS` and at exit. Once per process: a
    second call changes nothing."""
    global _file_values, _sink
    with _lock:
        if _file_values is None:
            folder.mkdir(parents=True, exist_ok=True)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)  # the value class reads it for each file
            _file_values = values.MultiProcessValue()  # type: ignore[no-untyped-call]
            TICK_LAG._metric_init()  # made at import without labels: its values move to the folder now
            for metric in (BROKER_RESPONSES, BROKER_SECONDS, TIER_FIRED, GATEWAY_SECONDS):
                with metric._lock:  # label sets made before (in memory) are made again, in the folder
                    metric._metrics.clear()
            _children.clear()
            threading.Thread(target=_write_every, name="metrics-files", daemon=True).start()
            atexit.register(write_counts)
        if db is None or clock is None:
            return
        first = _sink is None
        _sink = (db, clock)  # a process that builds its runtime again saves to the newest database
        if first:
            threading.Thread(target=_flush_every, name="broker-latency", daemon=True).start()
            atexit.register(_flush_quietly)


def detach() -> None:
    """Stop adding response times to a database (its runtime and database are gone, as at the end of a test
    session); times not saved yet are dropped. The process's metrics files carry on."""
    global _sink
    with _lock:
        _sink = None
        _book.take()


def _write_every() -> None:
    while True:
        time.sleep(WRITE_SECONDS)
        write_counts()


def _flush_every() -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        _flush_quietly()


def _flush_quietly() -> None:
    try:
        flush_latency()
    except Exception as exc:  # the database away for a moment: the times wait for the next flush
        log.warning("broker response times not saved yet (%s)", type(exc).__name__)


def flush_latency() -> None:
    """Add the response times recorded since the last flush to ``broker_latency`` (one upsert a TR)."""
    if _sink is None:
        return
    taken = _book.take()
    if taken:
        try:
            save_latency(_sink[0], taken)
        except Exception:
            with _book.lock:  # kept for the next flush
                for key, (calls, total, longest) in taken.items():
                    row = _book.pending.setdefault(key, [0, 0, 0])
                    row[0], row[1], row[2] = row[0] + calls, row[1] + total, max(row[2], longest)
            raise


def save_latency(db: Any, rows: dict[tuple[date, str], list[int]]) -> None:
    import sqlalchemy as sa

    from autotrade.store.models import BrokerLatency

    with db.transaction() as conn:
        for (day, api_id), (calls, total, longest) in sorted(rows.items()):
            stmt = db.upsert(BrokerLatency).values(
                trading_day=day, api_id=api_id, calls=calls, total_ms=total, max_ms=longest
            )
            t = BrokerLatency.__table__.c
            conn.execute(stmt.on_conflict_do_update(
                index_elements=[t.trading_day, t.api_id],
                set_={"calls": t.calls + stmt.excluded.calls, "total_ms": t.total_ms + stmt.excluded.total_ms,
                      "max_ms": sa.case((stmt.excluded.max_ms > t.max_ms, stmt.excluded.max_ms),
                                        else_=t.max_ms)},
            ))  # fmt: skip


def folder_collector(folder: Path) -> CollectorRegistry:
    """A registry of what every process wrote to ``folder`` (empty while nothing has), this one's counts
    up to now."""
    write_counts()
    folder.mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))  # type: ignore[no-untyped-call]
    return registry
