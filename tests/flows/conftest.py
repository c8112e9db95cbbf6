"""Flows under Prefect's test harness (a temporary Prefect server for the session) on the embedded stack:
the simulator over real HTTP under a virtual clock, SQLite or PostgreSQL, the local KMS provider and the vault
gateway."""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import socket
import subprocess
import time as wall
from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import httpx
import pytest

from autotrade.demo.stack import Stack, embedded_stack
from autotrade.domain.krx import KST
from tests.conftest import drain_prefect_client_services

if TYPE_CHECKING:
    from prefect.client.schemas.objects import TaskRun

DAY1, DAY2 = date(2026, 11, 18), date(2026, 11, 19)  # Wednesday, Thursday


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


async def settled_task_runs(flow_run_id: UUID, within: float = 30.0) -> list[TaskRun]:
    """The task runs of a flow run as the Prefect API has them once this process's events are sent and the
    server has recorded them (task-run states reach it as events, recorded a little later): read until
    there are some, every one is in a final state and a second read agrees, for at most ``within`` s."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter
    from prefect.client.schemas.sorting import TaskRunSort

    await asyncio.to_thread(drain_prefect_client_services)
    deadline = wall.monotonic() + within
    last: list[tuple[str, str]] | None = None
    async with get_client() as client:
        while True:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                task_run_filter=TaskRunFilter(), sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=200,
            )  # fmt: skip
            seen = sorted((str(r.id), r.state.type.value if r.state else "") for r in runs)
            final = bool(runs) and all(r.state is not None and r.state.is_final() for r in runs)
            if (final and seen == last) or wall.monotonic() > deadline:
                return runs
            last = seen
            await asyncio.sleep(0.3)


@contextlib.asynccontextmanager
async def other_prefect_api(api_url: str) -> AsyncIterator[None]:
    """This process's Prefect client, events and logs on the server at ``api_url`` for the block, on the
    harness's again afterwards."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    await asyncio.to_thread(drain_prefect_client_services)
    with temporary_settings({PREFECT_API_URL: api_url}):
        try:
            yield
        finally:
            await asyncio.to_thread(drain_prefect_client_services)


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
