"""Shared fixtures: databases on SQLite and on a fresh PostgreSQL database per test session.

PostgreSQL: 127.0.0.1:5432, trust auth, maintenance database ``test`` (AUTOTRADE_TEST_PG_ADMIN_URL to
override). A fresh database is created for the run and dropped afterwards so runs never see each other's
rows. With CI set, an unreachable server fails the run loudly; elsewhere the PostgreSQL tests are skipped
with the reason shown.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

PG_ADMIN_URL = os.environ.get(
    "AUTOTRADE_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _pg_unavailable(exc: Exception) -> None:
    msg = (
        f"PostgreSQL is required for the database suite but {PG_ADMIN_URL} is unreachable: "
        f"{type(exc).__name__}: {exc}"
    )
    if IN_CI:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"autotrade_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        _pg_unavailable(exc)
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            # FORCE: a pool's connection that comes back between the terminate and the drop goes too
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def fresh_schema(base: str) -> Iterator[str]:
    """A URL for a new schema of the PostgreSQL database ``base`` (reachable from other processes too),
    dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.engine.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL on each backend. PostgreSQL tests get a fresh schema each."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    with fresh_schema(request.getfixturevalue("pg_url")) as url:
        yield url


# `make test` runs two pytest-xdist workers with ``--dist loadgroup``. Every test that starts a Prefect server
# (the flows, ops and web harnesses) or reads one (the API) stays in one group, so one worker runs them in the
# serial order: Prefect's client services are per process and were seen posting a run's events to another
# harness's server when these ran on both workers. The other worker takes everything else.
PREFECT_GROUP_DIRS = ("api", "flows", "ops", "web")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        parts = item.path.relative_to(root).parts if item.path.is_relative_to(root) else ()
        if parts and parts[0] in PREFECT_GROUP_DIRS:
            item.add_marker(pytest.mark.xdist_group("prefect"))


def drain_prefect_client_services() -> None:
    """Send what Prefect's event and log workers hold, and stop them: the next event or log starts new ones on
    the API of that moment. (From code with a running event loop: in a thread, ``asyncio.to_thread``.)"""
    if "prefect.events.worker" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        service.drain_all(timeout=30, at_exit=False)


@pytest.fixture(autouse=True)
def _prefect_client_services_start_on_this_tests_api() -> None:
    """Prefect's event and log workers are one per process, keyed without the API's address, and keep the
    server of the moment they started: one started under another test's server (each Prefect directory has a
    harness of its own; some tests start servers of their own) would send this test's task-run states and
    logs there, or to a server already stopped."""
    drain_prefect_client_services()


@pytest.fixture(scope="session", autouse=True)
def _metrics_stop_with_the_session() -> Iterator[None]:
    """Set up first, torn down last: by then the session's databases are dropped, so the broker response
    times' background flush (and its at-exit flush) must not try them."""
    yield
    from autotrade.ops import worker_metrics

    worker_metrics.detach()


_pg_counts = {"passed": 0, "failed": 0, "skipped": 0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    counted = report.when == "call" or report.outcome in ("failed", "skipped")
    if "postgres" in report.keywords and counted:
        _pg_counts[report.outcome] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    c = _pg_counts
    terminalreporter.write_line(
        f"PostgreSQL suite: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"
    )
