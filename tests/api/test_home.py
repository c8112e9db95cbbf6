"""One home for state: every path under AUTOTRADE_HOME whatever the working directory; a moved working
directory finds the same master key and opens the sealed keys; sealed keys without their master key stop
the start (no new key is made); database and key files are 0600. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from autotrade.access import GatewayAccess
from autotrade.config import CHECKOUT, Settings
from autotrade.secret_files import MissingMasterKey
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.vault.keys import KeyStore
from autotrade.vault.kms import LocalKms


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_paths_follow_the_home_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("AUTOTRADE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    default = Settings(_env_file=None)  # type: ignore[call-arg]
    assert default.home == CHECKOUT / "var"
    assert default.local_master_key_path == CHECKOUT / "var" / "master.key"
    assert default.database_url == f"sqlite:///{CHECKOUT / 'var' / 'autotrade.db'}"
    home = tmp_path / "home"
    monkeypatch.setenv("AUTOTRADE_HOME", str(home))
    monkeypatch.setenv("AUTOTRADE_SCAN_LOCATION", "incoming")  # relative: under the home
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (s.data_dir, s.local_master_key_path, s.scan_location, s.backup_location) == (
        home, home / "master.key", str(home / "incoming"), str(home / "backups"))  # fmt: skip
    assert s.database_url == f"sqlite:///{home / 'autotrade.db'}"


def test_a_moved_working_directory_finds_the_same_master_key(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("AUTOTRADE_HOME", str(home))
    upgrade(db_url)
    db = Database(db_url)
    try:
        (tmp_path / "one").mkdir()
        (tmp_path / "two").mkdir()
        monkeypatch.chdir(tmp_path / "one")
        first = Settings(_env_file=None, database_url=db_url)  # type: ignore[call-arg]
        KeyStore(db, LocalKms(first.local_master_key_path)).store(
            "u1", "5100000001", SecretStr("PSkey-123456"), SecretStr("secret-123456"),
            account_name=None, daily_limit=1_000_000,
        )  # fmt: skip
        assert mode(first.local_master_key_path) == 0o600
        monkeypatch.chdir(tmp_path / "two")  # another directory: the same key, the sealed key opens
        second = Settings(_env_file=None, database_url=db_url)  # type: ignore[call-arg]
        assert second.local_master_key_path == first.local_master_key_path
        GatewayAccess(second, db)  # starts: the master key is there
        opened = KeyStore(db, LocalKms(second.local_master_key_path)).credentials("u1", "5100000001")
        assert opened.app_key.get_secret_value() == "PSkey-123456"
        assert not (tmp_path / "two" / "var").exists()  # nothing written under the working directory
        # The master key missing while keys are sealed: refuse to start, and do not make a new key.
        moved = tmp_path / "master.key.bak"
        first.local_master_key_path.rename(moved)
        with pytest.raises(MissingMasterKey, match="1 sealed broker keys"):
            GatewayAccess(second, db)
        assert not first.local_master_key_path.exists()
    finally:
        db.dispose()


def test_the_sqlite_database_is_private(tmp_path: Path) -> None:
    path = tmp_path / "db" / "autotrade.db"
    upgrade(f"sqlite:///{path}")
    db = Database(f"sqlite:///{path}")
    try:
        with db.unit_of_work():
            pass
        assert mode(path) == 0o600
        path.chmod(0o644)  # an older file: narrowed on the next start
        Database(f"sqlite:///{path}").dispose()
        assert mode(path) == 0o600
    finally:
        db.dispose()
