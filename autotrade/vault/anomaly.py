"""Security rules over the gateway's traffic, graded by what a request does, and the kill switch's inputs.

Every request is first classified by its effect on the user's money:

- ``READ``: session, quotes, balances, order inquiries. Moves no money.
- ``PROTECTIVE_SELL``: a sell (or cancel, or modify) of a stock the product holds an open position in, for
  no more shares than it holds. Reduces exposure; it is how a stop-loss keeps its promise.
- ``OTHER_SELL``: a sell or cancel the product cannot tie to a position it opened (a code it does not hold,
  or more shares than it holds). The product never sends one.
- ``BUY``: spends the user's money.

Each finding has a grade (what the gateway does about it):

- ``RECORD``: a security event row, nothing else; the request goes through.
- ``ALERT``: a security event and an operator alert; the request goes through.
- ``STEP_UP``: this request is refused and the operator alerted; the key stays ACTIVE, so a person (the
  operator, or the user re-running the step) must decide before it is tried again.
- ``DISABLE``: the kill switch. The key is DISABLED, its broker token revoked, the operator and the user
  told. A disabled key keeps a sell-only scope (see :mod:`autotrade.vault.gateway`), so the positions the
  product opened are still protected.

The rules, their grades and why:

======================  ==========================  =========================================================
rule                    grade                       why
======================  ==========================  =========================================================
``off_hours``           BUY, OTHER_SELL: STEP_UP    Outside ``allowed_from``-``allowed_until`` KST or on a
                        PROTECTIVE_SELL: RECORD     non-trading day. A buy then is not what the schedule
                        READ: none                  does, but a retried or mis-dated run does it too: refuse
                                                    that buy, tell the operator, do not cut the user off. A
                                                    protective sell is never refused by a time rule (the
                                                    broker refuses what it cannot execute). Reads at 20:00
                                                    (the strategies view), a 19:00 report re-run or a
                                                    Sunday retry are normal use: no finding at all.
``unknown_origin``      BUY, OTHER_SELL: STEP_UP    The origin is what the calling process says it is (a
                        READ, PROTECTIVE_SELL:      setting): a mismatch is a misconfiguration far more
                        ALERT                       often than an attack, and it proves nothing. It is not
                                                    allowed to spend; it is allowed to protect.
``burst``               DISABLE                     More than ``burst_requests`` requests of one account in
                                                    ``burst_window_seconds``, counted over every process (the
                                                    access log). The product's own pace is about one order
                                                    a second per key; a burst is a leaked token being used.
``repeated_failures``   DISABLE                     ``failed_checks`` refused requests (bad, revoked, expired
                                                    or out-of-scope tokens) in ``failed_window_seconds``,
                                                    over every process. Refusals by a STEP_UP rule do not
                                                    count: a Sunday retry of a whole batch would otherwise
                                                    turn one refused buy per account into a kill.
``limit_breach``        DISABLE                     A buy over the token's spending cap or the account's
                                                    daily limit. The planner never asks for one: someone
                                                    else is spending with the token.
``sell_only_scope``     ALERT                       A disabled key's protective sell: allowed, and every one
                                                    is shown to the operator.
======================  ==========================  =========================================================

The windows count rows of ``access_log`` (every request, allowed or refused, of every process) inside the
admission's one read, so two processes each seeing half a burst still add up to the whole burst. A key's
windows start again when its status changes (``user_api_keys.status_changed_at``): an operator's re-enable is
not undone by the requests that caused the kill.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time
from enum import IntEnum, StrEnum
from typing import Any

from pydantic import BaseModel, Field

from autotrade.domain.calendar import CalendarRangeError, is_trading_day
from autotrade.domain.krx import KST

HELD = "held: "  # the reason prefix of a request refused by a STEP_UP rule (not counted as a failure)


class Grade(IntEnum):
    """What the gateway does about a finding, in increasing order."""

    RECORD = 1
    ALERT = 2
    STEP_UP = 3
    DISABLE = 4

    @property
    def label(self) -> str:
        return self.name.lower()


class RequestKind(StrEnum):
    READ = "read"
    PROTECTIVE_SELL = "protective_sell"
    OTHER_SELL = "other_sell"
    BUY = "buy"


def classify(action: str, held: int, quantity: int | None) -> RequestKind:
    """What a gateway action does: ``held`` is what the product's open positions of the request's code
    hold in the account, ``quantity`` the shares of a sell (None or 0: a cancel or modify of an order)."""
    if action == "order:buy":
        return RequestKind.BUY
    if not action.startswith("order:"):
        return RequestKind.READ
    if held > 0 and (not quantity or quantity <= held):
        return RequestKind.PROTECTIVE_SELL
    return RequestKind.OTHER_SELL


class AnomalySettings(BaseModel):
    """Thresholds of the rules (per user and account)."""

    allowed_from: time = time(7, 30)  # buys only
    allowed_until: time = time(18, 30)
    trading_days_only: bool = True
    burst_requests: int = Field(120, gt=0, description="requests in burst_window_seconds that trip the rule")
    burst_window_seconds: float = Field(10.0, gt=0)
    failed_checks: int = Field(5, gt=0, description="refused requests in failed_window_seconds")
    failed_window_seconds: float = Field(300.0, gt=0)
    allowed_origins: frozenset[str] = frozenset({"prefect", "api", "demo", "test", "bench"})

    @classmethod
    def of(cls, settings: Any) -> AnomalySettings:
        """From the product's flat ``anomaly_*`` settings (:class:`autotrade.config.Settings`)."""
        origins = {o.strip() for o in str(settings.anomaly_allowed_origins).split(",") if o.strip()}
        return cls(
            allowed_from=settings.anomaly_buy_hours_from, allowed_until=settings.anomaly_buy_hours_until,
            trading_days_only=settings.anomaly_trading_days_only,
            burst_requests=settings.anomaly_burst_requests,
            burst_window_seconds=settings.anomaly_burst_window_seconds,
            failed_checks=settings.anomaly_failed_checks,
            failed_window_seconds=settings.anomaly_failed_window_seconds,
            allowed_origins=frozenset(origins),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    grade: Grade
    detail: str

    @property
    def severity(self) -> str:
        return self.grade.label


class AnomalyDetector:
    """The rules as pure functions of one request and the shared counts the admission read."""

    def __init__(self, settings: AnomalySettings | None = None) -> None:
        self.settings = settings or AnomalySettings()

    def on_request(
        self,
        kind: RequestKind,
        at: datetime,
        origin: str | None,
        recent_requests: int,
        *,
        checked: bool = True,
    ) -> list[Finding]:
        """``recent_requests``: the account's requests in the burst window, this one included. A request
        already refused (``checked`` False) is only counted towards the burst."""
        s = self.settings
        found: list[Finding] = []
        if not checked:
            return self._burst(recent_requests)
        spends = kind in (RequestKind.BUY, RequestKind.OTHER_SELL)
        local = at.astimezone(KST)
        when = None
        if not (s.allowed_from <= local.time() <= s.allowed_until):
            when = f"{kind.value} at {local:%H:%M} KST"
        elif s.trading_days_only and not _trading_day(local):
            when = f"{kind.value} on non-trading day {local.date()}"
        if when is not None and kind is not RequestKind.READ:
            found.append(Finding("off_hours", Grade.STEP_UP if spends else Grade.RECORD, when))
        if origin not in s.allowed_origins:
            found.append(Finding("unknown_origin", Grade.STEP_UP if spends else Grade.ALERT,
                                 f"{kind.value} from origin {origin!r}"))  # fmt: skip
        return found + self._burst(recent_requests)

    def _burst(self, recent_requests: int) -> list[Finding]:
        s = self.settings
        if recent_requests > s.burst_requests:
            detail = f"{recent_requests} requests in {s.burst_window_seconds:g}s"
            return [Finding("burst", Grade.DISABLE, detail)]
        return []

    def on_refusal(self, failures: int, reason: str) -> list[Finding]:
        """``failures``: the account's counted refusals in the window, this one included."""
        if failures >= self.settings.failed_checks:
            detail = f"{failures} refused requests; last: {reason}"
            return [Finding("repeated_failures", Grade.DISABLE, detail)]
        return []

    @staticmethod
    def limit_breach(detail: str) -> Finding:
        return Finding("limit_breach", Grade.DISABLE, detail)

    @staticmethod
    def sell_only(detail: str) -> Finding:
        return Finding("sell_only_scope", Grade.ALERT, detail)


def _trading_day(moment: datetime) -> bool:
    try:
        return is_trading_day(moment.date())
    except CalendarRangeError:
        return False


class AlertEvent(StrEnum):
    FINDING = "finding"  # an ALERT or STEP_UP finding, or a disabled key's protective sell: the operator
    DISABLED = "disabled"  # the kill switch: the operator and the user (with the way back)
    ENABLED = "enabled"  # an operator re-enabled the key: the operator and the user


@dataclass(frozen=True, slots=True)
class SecurityAlert:
    """What the gateway tells the alert sink. Carries no secret and no token."""

    event: AlertEvent
    user_id: str
    account_no: str
    rule: str
    grade: Grade
    action: str
    detail: str
    at: datetime
    positions: tuple[str, ...] = field(default=())  # codes of the product's open positions (DISABLED)


AlertSink = Callable[[SecurityAlert], None]
