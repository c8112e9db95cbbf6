"""Anomaly detection over the gateway's traffic, and the kill switch.

Rules run inline on every gateway request, so a hit is acted on within milliseconds of the request that
caused it (the specification asks for a minute): the key is disabled, its broker token revoked, a security
event recorded and the operator alerted.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from pydantic import BaseModel, Field

from autotrade.domain.calendar import CalendarRangeError, is_trading_day
from autotrade.domain.krx import KST

log = logging.getLogger(__name__)


class AnomalySettings(BaseModel):
    """Thresholds of the rules (all per user and account)."""

    allowed_from: time = time(7, 30)
    allowed_until: time = time(18, 30)
    burst_requests: int = Field(120, gt=0, description="requests in burst_window_seconds that trip the rule")
    burst_window_seconds: float = Field(10.0, gt=0)
    failed_checks: int = Field(5, gt=0, description="refused requests in failed_window_seconds")
    failed_window_seconds: float = Field(300.0, gt=0)
    allowed_origins: frozenset[str] = frozenset({"prefect", "api", "demo", "test", "bench"})
    trading_days_only: bool = True


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    severity: str  # "high" disables the key
    detail: str


@dataclass(slots=True)
class _Window:
    hits: deque[datetime] = field(default_factory=deque)

    def add(self, at: datetime, span: timedelta) -> int:
        self.hits.append(at)
        while self.hits and self.hits[0] <= at - span:
            self.hits.popleft()
        return len(self.hits)


class AnomalyDetector:
    def __init__(self, settings: AnomalySettings | None = None) -> None:
        self.settings = settings or AnomalySettings()
        self._requests: dict[str, _Window] = {}
        self._failures: dict[str, _Window] = {}

    def on_request(self, key: str, at: datetime, origin: str | None) -> list[Finding]:
        s = self.settings
        found: list[Finding] = []
        local = at.astimezone(KST)
        if not (s.allowed_from <= local.time() <= s.allowed_until):
            found.append(Finding("off_hours", "high", f"request at {local:%H:%M} KST"))
        elif s.trading_days_only and not _trading_day(local):
            found.append(Finding("off_hours", "high", f"request on non-trading day {local.date()}"))
        if origin not in s.allowed_origins:
            found.append(Finding("unknown_origin", "high", f"origin {origin!r}"))
        n = self._requests.setdefault(key, _Window()).add(at, timedelta(seconds=s.burst_window_seconds))
        if n > s.burst_requests:
            found.append(Finding("burst", "high", f"{n} requests in {s.burst_window_seconds:g}s"))
        return found

    def on_refusal(self, key: str, at: datetime, reason: str) -> list[Finding]:
        s = self.settings
        n = self._failures.setdefault(key, _Window()).add(at, timedelta(seconds=s.failed_window_seconds))
        if n >= s.failed_checks:
            return [Finding("repeated_failures", "high", f"{n} refused requests; last: {reason}")]
        return []

    @staticmethod
    def limit_breach(detail: str) -> Finding:
        return Finding("limit_breach", "high", detail)


def _trading_day(moment: datetime) -> bool:
    try:
        return is_trading_day(moment.date())
    except CalendarRangeError:
        return False


AlertSink = Callable[[str, str, str, str], None]  # user_id, account_no, rule, action taken
