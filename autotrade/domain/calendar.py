"""KRX trading calendar from ``exchange_calendars`` (XKRX): holidays and shifted days, never a hand list.

Building the calendar takes about six seconds (the lunar holidays), so it is built once, lazily, and its
sessions are kept as a sorted tuple of dates for fast look-ups. The built sessions are also kept in a small
JSON file (``$AUTOTRADE_CACHE_DIR``, default ``~/.cache/autotrade``) that later processes read in
milliseconds; it is rebuilt when ``exchange_calendars`` changes or after a week, since the library's
calendar reaches one year ahead of the day it is built.
"""

from __future__ import annotations

import bisect
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path

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


CACHE_MAX_AGE_DAYS = 7


@lru_cache(maxsize=1)
def _sessions() -> _Sessions:
    from importlib.metadata import version as installed

    version = installed("exchange_calendars")
    today = datetime.now(KST).date()
    cached = _read_cache(version, today)
    if cached is not None:
        return cached
    import exchange_calendars as xcals  # heavy import (pandas); only when the calendar must be built

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
    built = _Sessions(days=tuple(days), day_set=frozenset(days), hours=hours)
    _write_cache(built, version, today)
    return built


def warm_up() -> None:
    """Build or load the calendar now (a server does this before it takes requests)."""
    _sessions()


def _cache_file() -> Path:
    root = os.environ.get("AUTOTRADE_CACHE_DIR") or Path.home() / ".cache" / "autotrade"
    return Path(root) / "krx-sessions.json"


def _read_cache(version: str, today: date) -> _Sessions | None:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
        built_on = date.fromisoformat(data["built_on"])
        if data["version"] != version or data["start"] != CALENDAR_START:
            return None
        if not (built_on <= today <= built_on + timedelta(days=CACHE_MAX_AGE_DAYS)):
            return None
        days = tuple(date.fromisoformat(d) for d in data["days"])
        hours = {
            date.fromisoformat(d): (time.fromisoformat(o), time.fromisoformat(c))
            for d, (o, c) in data["hours"].items()
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not days or list(days) != sorted(days):
        return None
    return _Sessions(days=days, day_set=frozenset(days), hours=hours)


def _write_cache(s: _Sessions, version: str, today: date) -> None:
    """Best effort: a read-only home only costs the next process the build again."""
    path = _cache_file()
    payload = {
        "version": version, "start": CALENDAR_START, "built_on": today.isoformat(),
        "days": [d.isoformat() for d in s.days],
        "hours": {d.isoformat(): [o.isoformat(), c.isoformat()] for d, (o, c) in s.hours.items()},
    }  # fmt: skip
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, encoding="utf-8") as f:
            json.dump(payload, f)
        os.replace(f.name, path)
    except OSError:
        return


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
