"""KRX trading calendar from ``exchange_calendars`` (XKRX): holidays and shifted days, never a hand list.

Building the calendar takes about two seconds, so it is built once, lazily, and its sessions are kept as a
sorted tuple of dates for fast look-ups.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import lru_cache

from autotrade.domain.krx import KST, SessionTimes, session_times

CALENDAR_START = "2015-01-01"


@dataclass(frozen=True, slots=True)
class _Sessions:
    days: tuple[date, ...]
    day_set: frozenset[date]
    hours: dict[date, tuple[time, time]]  # only days that differ from 09:00-15:30

    @property
    def first(self) -> date:
        return self.days[0]

    @property
    def last(self) -> date:
        return self.days[-1]


@lru_cache(maxsize=1)
def _sessions() -> _Sessions:
    import exchange_calendars as xcals  # heavy import (pandas); only when the calendar is first needed

    cal = xcals.get_calendar("XKRX", start=CALENDAR_START)
    days: list[date] = []
    hours: dict[date, tuple[time, time]] = {}
    opens = cal.opens.dt.tz_convert(KST)
    closes = cal.closes.dt.tz_convert(KST)
    for label, o, c in zip(cal.sessions, opens, closes, strict=True):
        d = label.date()
        days.append(d)
        ot, ct = o.time(), c.time()
        if (ot, ct) != (time(9, 0), time(15, 30)):
            hours[d] = (ot, ct)
    return _Sessions(days=tuple(days), day_set=frozenset(days), hours=hours)


class CalendarRangeError(ValueError):
    """The date lies outside the span the KRX calendar knows."""


def _check_range(day: date) -> _Sessions:
    s = _sessions()
    if not (s.first <= day <= s.last):
        raise CalendarRangeError(f"{day} is outside the KRX calendar ({s.first}..{s.last})")
    return s


def is_trading_day(day: date) -> bool:
    return day in _check_range(day).day_set


def next_trading_day(day: date) -> date:
    """The first trading day strictly after ``day``."""
    s = _check_range(day)
    i = bisect.bisect_right(s.days, day)
    if i >= len(s.days):
        raise CalendarRangeError(f"no trading day after {day} in the KRX calendar")
    return s.days[i]


def previous_trading_day(day: date) -> date:
    """The last trading day strictly before ``day``."""
    s = _check_range(day)
    i = bisect.bisect_left(s.days, day)
    if i == 0:
        raise CalendarRangeError(f"no trading day before {day} in the KRX calendar")
    return s.days[i - 1]


def trading_days(start: date, end: date) -> list[date]:
    """Trading days in ``[start, end]``."""
    s = _sessions()
    lo = bisect.bisect_left(s.days, start)
    hi = bisect.bisect_right(s.days, end)
    return list(s.days[lo:hi])


def trading_day_of(moment: datetime) -> date:
    """The KST calendar date of a timezone-aware moment."""
    if moment.tzinfo is None:
        raise ValueError("moment must be timezone-aware")
    return moment.astimezone(KST).date()


def hours_of(day: date) -> SessionTimes:
    """Session boundaries on ``day`` (shifted on late-open days). Raises if ``day`` is not a trading day."""
    s = _check_range(day)
    if day not in s.day_set:
        raise ValueError(f"{day} is not a KRX trading day")
    if day in s.hours:
        o, c = s.hours[day]
        return session_times(o, c)
    return SessionTimes()
