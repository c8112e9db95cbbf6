"""How many processes the evening's buys are shared among (flows/fanout.py::planned_processes): the setting
changes it, "auto" starts worker processes only for evenings big enough to pay for their start-up; and how
the accounts are cut into shares (shares_of): a user's accounts stay in one."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from autotrade.config import Settings
from flows.fanout import AUTO_ACCOUNTS_PER_PROCESS, planned_processes, shares_of

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def settings(tmp_path: Path, url: str = PG, **kw: object) -> Settings:
    return Settings(database_url=url, data_dir=tmp_path, **kw)  # type: ignore[arg-type]


def test_auto_is_the_default_and_starts_processes_for_big_evenings_only(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert s.worker_processes == "auto"
    assert planned_processes(s, 1_000, cores=2) == 1  # paced by the broker: one process keeps up
    assert planned_processes(s, 2 * AUTO_ACCOUNTS_PER_PROCESS - 1, cores=2) == 1
    assert planned_processes(s, 2 * AUTO_ACCOUNTS_PER_PROCESS, cores=2) == 2
    assert planned_processes(s, 10_000, cores=2) == 2  # never more than the cores
    assert planned_processes(s, 10_000, cores=16) == 5  # nor than one per 2,000 accounts
    assert planned_processes(s, 10_000, cores=1) == 1
    assert planned_processes(settings(tmp_path, f"sqlite:///{tmp_path}/a.db"), 10_000, cores=8) == 1


def test_a_number_caps_the_processes_whatever_the_evening(tmp_path: Path) -> None:
    three = settings(tmp_path, worker_processes=3)
    assert planned_processes(three, 10_000, cores=2) == 3  # the operator's choice, not the cores
    assert planned_processes(three, 1_000, cores=8) == 2  # but never more than the batches (500 each)
    assert planned_processes(settings(tmp_path, worker_processes=1), 100_000, cores=8) == 1


def test_the_setting_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for given, want in (("auto", "auto"), ("4", 4)):
        monkeypatch.setenv("AUTOTRADE_WORKER_PROCESSES", given)
        assert Settings(database_url=PG, data_dir=tmp_path).worker_processes == want
    for bad in ("0", "65", "many", "-1"):
        monkeypatch.setenv("AUTOTRADE_WORKER_PROCESSES", bad)
        with pytest.raises(ValidationError):
            Settings(database_url=PG, data_dir=tmp_path)


def test_a_users_accounts_are_never_split_between_shares() -> None:
    """Each share tells its own users of their orders: a user in two shares would be told by both at once,
    and the second's record of it refused (with the rest of its share's notices)."""
    plain = [(f"u{i}", f"{i:010d}") for i in range(7)]
    assert shares_of(plain, 3) == [plain[:3], plain[3:6], plain[6:]]
    two = [("a", "1"), ("b", "2"), ("c", "3"), ("c", "4"), ("d", "5"), ("b", "6")]  # c at the edge, b twice
    assert shares_of(two, 2) == [[("a", "1"), ("b", "2"), ("b", "6")], [("c", "3"), ("c", "4")], [("d", "5")]]
    assert [a for share in shares_of(two, 1) for a in share] == [two[i] for i in (0, 1, 5, 2, 3, 4)]
    assert shares_of([], 3) == []
