"""Routes each notification to its audience's channels and makes sure delivery trouble stays here.

Contract with callers (flows, tasks, services): ``dispatch`` never raises. A channel failure is retried
with backoff, then recorded through a ``FailureRecorder`` and logged (channel, audience, kind, a safe error
text; never a message body, an address or a secret), and the operator is told that a user's notice was
lost. A per-channel circuit breaker stops a dead channel (Slack down for the evening) from costing every
user the full retry schedule: after ``breaker_threshold`` consecutive transient failures the channel fails
fast for ``breaker_cooldown_seconds``, and the operator hears about it once rather than per user.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from autotrade.notify.base import NotificationError, Notifier
from autotrade.notify.format import scrub_secrets
from autotrade.notify.messages import delivery_failed
from autotrade.notify.model import OPERATOR, Audience, Notification, NotificationKind

log = logging.getLogger("autotrade.notify")


@dataclass(frozen=True, slots=True)
class Route:
    """One delivery preference: a channel, its address (None: the notifier's default), and optionally the
    only kinds this route wants (e.g. KakaoTalk for tier triggers only, Slack for everything)."""

    channel: str
    to: str | None = None
    kinds: frozenset[NotificationKind] | None = None

    def accepts(self, kind: NotificationKind) -> bool:
        return self.kinds is None or kind in self.kinds


RoutesFor = Callable[[str], Sequence[Route]]
"""A user's routes by user id; later backed by the database (``users.notify_channels``, ``phone``)."""


@dataclass(frozen=True, slots=True)
class StaticRoutes:
    """Routes from a mapping, for configuration files and tests."""

    by_user: Mapping[str, Sequence[Route]]

    def __call__(self, user_id: str) -> Sequence[Route]:
        return self.by_user.get(user_id, ())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` tries in all; the wait after failed try n is ``backoff * multiplier**(n-1)``, capped."""

    attempts: int = 3
    backoff_seconds: float = 1.0
    multiplier: float = 2.0
    max_backoff_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    def delay(self, failed_attempt: int) -> float:
        return min(self.backoff_seconds * self.multiplier ** (failed_attempt - 1), self.max_backoff_seconds)


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """What the ``notification_failures`` table keeps: no body, no address, no secret."""

    notification_id: str
    channel: str
    audience: str
    kind: NotificationKind
    error: str
    attempts: int
    at: datetime


class FailureRecorder(Protocol):
    def record(self, failure: DeliveryFailure) -> None: ...


@dataclass
class InMemoryFailureRecorder:
    failures: list[DeliveryFailure] = field(default_factory=list)

    def record(self, failure: DeliveryFailure) -> None:
        self.failures.append(failure)


@dataclass(frozen=True, slots=True)
class Delivery:
    channel: str
    audience: str
    attempts: int


@dataclass
class DispatchReport:
    delivered: list[Delivery] = field(default_factory=list)
    failed: list[DeliveryFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _Breaker:
    """Consecutive transient failures per channel; open means fail fast until the cooldown ends."""

    def __init__(self, threshold: int, cooldown: float, monotonic: Callable[[], float]) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._monotonic = monotonic
        self._streak: dict[str, int] = {}
        self._open_until: dict[str, float] = {}

    def is_open(self, channel: str) -> bool:
        return self._open_until.get(channel, float("-inf")) > self._monotonic()

    def succeeded(self, channel: str) -> None:
        self._streak.pop(channel, None)
        self._open_until.pop(channel, None)

    def failed(self, channel: str) -> bool:
        """Count a transient failure; True when this one opened the circuit."""
        streak = self._streak.get(channel, 0) + 1
        self._streak[channel] = streak
        if self._threshold > 0 and streak >= self._threshold:
            self._streak[channel] = 0
            self._open_until[channel] = self._monotonic() + self._cooldown
            return True
        return False


@dataclass(frozen=True, slots=True)
class _Target:
    audience: Audience
    route: Route


class NotificationDispatcher:
    def __init__(
        self,
        notifiers: Iterable[Notifier],
        *,
        user_routes: RoutesFor,
        operator_routes: Sequence[Route],
        recorder: FailureRecorder | None = None,
        retry: RetryPolicy | None = None,
        fallback_routes: Sequence[Route] = (Route("console"),),
        operator_copy: frozenset[NotificationKind] = frozenset(
            {NotificationKind.ERROR, NotificationKind.SECURITY_ALERT}
        ),
        breaker_threshold: int = 5,
        breaker_cooldown_seconds: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``fallback_routes`` serve a user with no preferences, so a notice is never silently dropped.
        ``operator_copy`` kinds addressed to a user also go to the operator's routes."""
        self._notifiers = {n.channel: n for n in notifiers}
        self._user_routes = user_routes
        self._operator_routes = tuple(operator_routes)
        self._recorder = recorder or InMemoryFailureRecorder()
        self._retry = retry or RetryPolicy()
        self._fallback_routes = tuple(fallback_routes)
        self._operator_copy = operator_copy
        self._breaker = _Breaker(breaker_threshold, breaker_cooldown_seconds, monotonic)
        self._sleep = sleep
        self._clock = clock
        # Set by the background worker: once the process is ending, no further route or attempt is tried.
        self._stopped: Callable[[], bool] = lambda: False

    def preload_routes(self, user_ids: Iterable[str]) -> None:
        """Before notices to many users: their routes read at once, where the routes source can (its
        ``preload``); otherwise nothing changes. Never raises: each notice then reads its own."""
        preload = getattr(self._user_routes, "preload", None)
        if preload is None:
            return
        try:
            preload(user_ids)
        except Exception as exc:
            log.warning("routes not preloaded (%s); each notice reads its own", type(exc).__name__)

    def dispatch(self, notification: Notification) -> DispatchReport:
        """Deliver to every route of the audience (and the operator where due). Never raises."""
        report = DispatchReport()
        try:
            self._dispatch(notification, report)
        except Exception as exc:  # the last guard: trading must not fail because notifying did
            log.error("notification %s dispatch aborted: %s", notification.kind, type(exc).__name__)
        return report

    def _dispatch(self, notification: Notification, report: DispatchReport) -> None:
        try:
            targets = self._targets(notification)
        except Exception as exc:
            # The preference lookup (a database later) failing must not lose the notice: use the fallback.
            log.warning(
                "routes for %s unavailable (%s); using fallback", notification.audience, type(exc).__name__
            )
            targets = [_Target(notification.audience, r) for r in self._fallback_routes]
        for target in targets:
            if self._stopped():
                return
            failure, opened = self._deliver(notification, target, report)
            # An operator channel failing is recorded only: there is nobody further to tell. Failures
            # that were never attempted (circuit open) were announced once when the circuit opened.
            if failure is None or target.audience.is_operator or failure.attempts == 0 or self._stopped():
                continue
            error = f"{failure.channel} 채널 차단(연속 실패): {failure.error}" if opened else failure.error
            self._tell_operator(notification, failure, error)

    def _targets(self, notification: Notification) -> list[_Target]:
        kind = notification.kind
        targets: list[_Target] = []
        audience = notification.audience
        if audience.user_id is not None:
            routes = [r for r in self._user_routes(audience.user_id) if r.accepts(kind)]
            if not routes:
                routes = [r for r in self._fallback_routes if r.accepts(kind)]
            targets += [_Target(audience, r) for r in routes]
        if audience.is_operator or kind in self._operator_copy:
            targets += [_Target(OPERATOR, r) for r in self._operator_routes if r.accepts(kind)]
        unique: dict[tuple[str, str | None], _Target] = {}
        for t in targets:
            unique.setdefault((t.route.channel, t.route.to), t)  # one copy per address, first audience wins
        return list(unique.values())

    def _deliver(
        self, notification: Notification, target: _Target, report: DispatchReport
    ) -> tuple[DeliveryFailure | None, bool]:
        """Try one route with retries. Returns the recorded failure (if any) and whether it opened the
        channel's circuit."""
        channel = target.route.channel
        notifier = self._notifiers.get(channel)
        if notifier is None:
            return self._fail(
                notification, target, f"{channel}: no such channel configured", 0, report
            ), False
        if self._breaker.is_open(channel):
            return self._fail(
                notification, target, f"{channel}: circuit open, not attempted", 0, report
            ), False
        error = ""
        attempts = 0
        for attempt in range(1, self._retry.attempts + 1):
            attempts = attempt
            try:
                notifier.send(notification, target.route.to)
            except NotificationError as exc:
                error = scrub_secrets(str(exc))
                retryable = exc.retryable
            except Exception as exc:
                # Text of an exception we did not shape could carry a URL or token: keep only its type.
                error = f"{channel}: unexpected {type(exc).__name__}"
                retryable = True
            else:
                self._breaker.succeeded(channel)
                report.delivered.append(Delivery(channel, str(target.audience), attempt))
                return None, False
            log.warning(
                "notification %s to %s via %s failed (attempt %d/%d): %s",
                notification.kind,
                target.audience,
                channel,
                attempt,
                self._retry.attempts,
                error,
            )
            if not retryable or self._stopped():
                break
            if attempt < self._retry.attempts:
                self._sleep(self._retry.delay(attempt))
        else:
            # Every try failed transiently: that says something about the channel, not the recipient.
            opened = self._breaker.failed(channel)
            return self._fail(notification, target, error, attempts, report), opened
        return self._fail(notification, target, error, attempts, report), False

    def _fail(
        self, notification: Notification, target: _Target, error: str, attempts: int, report: DispatchReport
    ) -> DeliveryFailure:
        failure = DeliveryFailure(
            notification_id=notification.id,
            channel=target.route.channel,
            audience=str(target.audience),
            kind=notification.kind,
            error=error[:512],
            attempts=attempts,
            at=self._clock(),
        )
        report.failed.append(failure)
        log.error(
            "notification %s to %s via %s not delivered after %d attempt(s): %s",
            notification.kind,
            target.audience,
            failure.channel,
            attempts,
            failure.error,
        )
        try:
            self._recorder.record(failure)
        except Exception as exc:
            log.error("recording a notification failure failed: %s", type(exc).__name__)
        return failure

    def _tell_operator(self, lost: Notification, failure: DeliveryFailure, error: str) -> None:
        notice = delivery_failed(lost, failure.channel, error, failure.attempts, self._clock())
        for route in self._operator_routes:
            if route.channel == failure.channel and self._breaker.is_open(route.channel):
                continue
            self._deliver(notice, _Target(OPERATOR, route), DispatchReport())
