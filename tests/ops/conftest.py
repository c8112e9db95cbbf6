"""Operations tests: a temporary Prefect server for flows run on a restored database, and an empty database
on each backend to restore into."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import PG_ADMIN_URL


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def empty_db_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database on the backend of ``db_url`` to restore into. PostgreSQL: a new database, reached
    with the same connection options as ``db_url`` (its search path names the schema the dump recreates)."""
    url = sa.engine.make_url(db_url)
    if url.get_backend_name() == "sqlite":
        yield f"sqlite:///{tmp_path / 'restored.db'}"
        return
    name = f"autotrade_restore_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def table_rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of the product's schema (and Alembic's version), in primary-key order."""
    from autotrade.store.models import Base

    engine = sa.create_engine(url)
    out: dict[str, list[tuple[object, ...]]] = {}
    try:
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT * FROM alembic_version"))
            out["alembic_version"] = [tuple(r) for r in versions]
            for table in Base.metadata.sorted_tables:
                order = list(table.primary_key.columns) or list(table.columns)
                out[table.name] = [tuple(r) for r in conn.execute(sa.select(table).order_by(*order))]
    finally:
        engine.dispose()
    return out
