"""Signing keys for the embedded mode: random bytes in a 0600 file created on first use."""

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
        data = path.read_bytes()
        if len(data) < 16:
            raise ValueError(f"key file {path} is too short") from None
        return data
    with os.fdopen(fd, "wb") as f:
        key = secrets.token_bytes(size)
        f.write(key)
    return key
