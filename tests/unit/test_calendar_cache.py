"""The KRX sessions cache: what is read back equals what was built; anything stale or foreign is ignored."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from autotrade.domain import calendar as cal


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUTOTRADE_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_round_trip_keeps_every_session_and_shortened_day(cache_dir: Path) -> None:
    built = cal._sessions()
    today = date(2026, 11, 25)
    cal._write_cache(built, "9.9", today)
    back = cal._read_cache("9.9", today + timedelta(days=3))
    assert back is not None
    assert back.days == built.days and back.hours == built.hours and back.day_set == built.day_set
    assert date(2026, 1, 2) in back.hours  # the year opens an hour late


@pytest.mark.parametrize(
    "version, today",
    [("other", date(2026, 11, 25)), ("9.9", date(2026, 12, 10)), ("9.9", date(2026, 11, 24))],
    ids=["library changed", "a week old", "built in the future"],
)
def test_stale_or_foreign_cache_is_rebuilt(cache_dir: Path, version: str, today: date) -> None:
    cal._write_cache(cal._sessions(), "9.9", date(2026, 11, 25))
    assert cal._read_cache(version, today) is None


@pytest.mark.parametrize("text", ["", "{", json.dumps({"version": "9.9"}), json.dumps([1, 2])])
def test_damaged_cache_is_ignored(cache_dir: Path, text: str) -> None:
    (cache_dir / "krx-sessions.json").write_text(text)
    assert cal._read_cache("9.9", date(2026, 11, 25)) is None


def test_unsorted_days_are_refused(cache_dir: Path) -> None:
    cal._write_cache(cal._sessions(), "9.9", date(2026, 11, 25))
    path = cache_dir / "krx-sessions.json"
    data = json.loads(path.read_text())
    data["days"] = list(reversed(data["days"]))
    path.write_text(json.dumps(data))
    assert cal._read_cache("9.9", date(2026, 11, 25)) is None
