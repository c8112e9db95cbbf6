"""Where the KRX sessions cache lives and for how long it is trusted: the default folder under the home, a
folder made with its parents, the temporary file written beside the cache (an atomic rename stays on one
file system), and both ends of the week a cache is read back."""

from __future__ import annotations

import tempfile
from datetime import date, time
from pathlib import Path

import pytest

from autotrade.domain import calendar as cal

BUILT = date(2026, 11, 25)
SMALL = cal._Sessions(
    days=(date(2026, 11, 24), BUILT),
    day_set=frozenset({date(2026, 11, 24), BUILT}),
    hours={BUILT: (time(10, 0), time(16, 30))},
)


def test_the_default_cache_is_under_the_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOTRADE_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cal._cache_file() == tmp_path / ".cache" / "autotrade" / "krx-sessions.json"


def test_a_missing_cache_folder_is_made_with_its_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOTRADE_CACHE_DIR", str(tmp_path / "a" / "b"))
    cal._write_cache(SMALL, "9.9", BUILT)
    assert cal._read_cache("9.9", BUILT) == SMALL


def test_the_temporary_file_is_written_beside_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The system's temporary folder is gone: the cache is still written (its temporary file is not there)."""
    monkeypatch.setenv("AUTOTRADE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    cal._write_cache(SMALL, "9.9", BUILT)
    assert cal._read_cache("9.9", BUILT) == SMALL


@pytest.mark.parametrize(
    "today", [BUILT, date(2026, 12, 2)], ids=["the day it was built", "seven days later"]
)
def test_a_cache_is_trusted_from_its_day_to_a_week_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, today: date
) -> None:
    monkeypatch.setenv("AUTOTRADE_CACHE_DIR", str(tmp_path))
    cal._write_cache(SMALL, "9.9", BUILT)
    assert cal._read_cache("9.9", today) == SMALL
