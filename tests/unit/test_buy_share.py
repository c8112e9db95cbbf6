"""A share's buys, then its users told (tasks/trading.py::buy_share): telling them failing fails no order,
and says so."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

import tasks.trading as trading


async def test_a_failure_telling_the_users_fails_no_order(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    placed = [{"user_id": "u1", "account_no": "5001", "placed": [("005930", 3, 71_000)]}]
    told: list[bool] = []

    async def buys(*args: Any) -> list[dict[str, Any]]:
        return placed

    async def database_away(outcomes: Any, day: date) -> int:
        told.append(True)
        raise OperationalError("INSERT INTO user_notices", None, ConnectionError("gone"))

    monkeypatch.setattr(trading, "buy_batches", buys)
    monkeypatch.setattr(trading, "tell_buys", database_away)
    with caplog.at_level(logging.ERROR, logger="tasks.trading"):
        out = await trading.buy_share(1, [("u1", "5001")], date(2026, 11, 27), notify=True)
    assert out == placed and told == [True]
    assert "were not told of their orders (OperationalError)" in caplog.text
    told.clear()
    dry = await trading.buy_share(1, [("u1", "5001")], date(2026, 11, 27), dry_run=True, notify=True)
    assert dry == placed
    assert told == []  # a dry run tells nobody
