"""Signing keys for the embedded mode: random bytes in a 0600 file created on first use; the check that a
local master key is where the sealed keys expect it; 0600 for the SQLite database files."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create_key(path: Path, size: int = 32) -> bytes:
    """The key in ``path``; created with ``size`` random bytes and mode 0600 if it does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # a key file someone copied with a wider mode
        data = path.read_bytes()
        if len(data) < 16:
            raise ValueError(f"key file {path} is too short") from None
        return data
    with os.fdopen(fd, "wb") as f:
        key = secrets.token_bytes(size)
        f.write(key)
    return key


class MissingMasterKey(RuntimeError):
    """Sealed keys exist in the database but the local master key file is not there."""


def require_master_key(path: Path, sealed_keys: int) -> None:
    """Refuse to go on (rather than create a new master key that opens nothing) when ``sealed_keys`` keys
    are sealed and the master key file ``path`` is missing: a moved home, a lost file, the wrong
    ``AUTOTRADE_HOME``."""
    if sealed_keys and not path.exists():
        raise MissingMasterKey(
            f"{sealed_keys} sealed broker keys are in the database but the master key {path} is missing: "
            "set AUTOTRADE_HOME (or AUTOTRADE_LOCAL_MASTER_KEY_PATH) to where it is, or restore it from its "
            "backup; a new key would open none of them, so none is created"
        )


def private_sqlite_file(db_path: str) -> None:
    """Create the SQLite database file with mode 0600 before SQLite does (it would follow the umask, 0644),
    and narrow an existing one; its -wal and -shm files take the database file's mode."""
    path = Path(db_path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return
    os.close(fd)
