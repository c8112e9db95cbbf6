"""Flows under Prefect's test harness (a temporary Prefect server for the session) on the embedded stack:
the simulator over real HTTP under a virtual clock, SQLite or PostgreSQL, the local KMS provider and the vault
gateway."""

from __future__ import annotations

import contextlib
import io
import random
import socket
import subprocess
import time as wall
from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path

import httpx
import pytest

from autotrade.demo.stack import Stack, embedded_stack
from autotrade.domain.krx import KST

DAY1, DAY2 = date(2026, 11, 18), date(2026, 11, 19)  # Wednesday, Thursday


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def notes() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
async def stack(prefect_server: None, tmp_path: Path, notes: io.StringIO, db_url: str) -> Stack:  # type: ignore[misc]
    """The embedded stack on each database: SQLite, and PostgreSQL (a fresh schema; ``db_url`` marks the
    variant ``postgres``, so it runs in the PostgreSQL suite)."""
    start = datetime.combine(DAY1, time(15, 0), tzinfo=KST)
    with embedded_stack(
        tmp_path, seed=5, stocks=12, start=start, notifications=notes, database_url=db_url
    ) as s:
        await s.register_users(2)
        try:
            yield s
        finally:
            await s.access.aclose()


def evening_scan(stack: Stack, day: date, rows: int = 6) -> None:
    stack.at(day, time(15, 36))
    stack.write_scan(day, random.Random(day.toordinal()), rows=rows)
    stack.at(day, time(15, 40))


def free_port() -> int:
    """A TCP port on 127.0.0.1 free at the moment of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_prefect_server(api: str, server: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Until the ``prefect server start`` process ``server`` answers at ``api``; the test fails with the end
    of its ``log`` if it exits first or ``timeout`` seconds pass."""
    deadline = wall.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        if server.poll() is not None or wall.monotonic() > deadline:
            pytest.fail(f"prefect server did not start: {log.read_text()[-2000:]}")
        wall.sleep(0.3)
