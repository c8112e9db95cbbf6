"""Fixtures of the PostgreSQL batch tests: a fresh migrated schema, and a database with group commits on it
(modules that need another ``db`` define their own)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from tests.conftest import fresh_schema


@pytest.fixture
def pg(pg_url: str) -> Iterator[str]:
    with fresh_schema(pg_url) as url:
        upgrade(url)
        yield url


@pytest.fixture
async def db(pg: str) -> AsyncIterator[Database]:
    """A database with group commits on the fresh schema; its batch connections and engine closed after."""
    d = Database(pg)
    try:
        yield d
    finally:
        await d.aclose()
        d.dispose()
