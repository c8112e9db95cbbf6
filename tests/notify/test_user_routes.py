"""Users' notification routes (autotrade/runtime.py::UserRoutes): read per notice, or for many users in one
query before a bulk of notices; a preloaded reading serves one notice, and the next reads the table again, so
a user who changes channels is heard."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from autotrade.notify import Route
from autotrade.runtime import UserRoutes
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import User


def test_preloaded_routes_serve_the_next_notice_without_a_query_then_the_table_is_read_again(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/routes.db"
    upgrade(url)
    db = Database(url)
    with db.unit_of_work() as s:
        s.add(User(user_id="kim", notify_channels="kakao,sns", phone="010-1234-5678"))
        s.add(User(user_id="lee", notify_channels="slack"))
    queries: list[str] = []
    sa.event.listen(db.engine, "before_cursor_execute", lambda *a: queries.append(a[2]))
    routes = UserRoutes(db)
    read = {u: routes(u) for u in ("kim", "lee", "nobody")}  # one query each
    assert read == {
        "kim": [Route("kakao", "010-1234-5678"), Route("sns", "+821012345678")],
        "lee": [Route("slack", None)],
        "nobody": [Route("console", None)],
    }
    assert len(queries) == 3

    queries.clear()
    routes.preload(["kim", "lee", "nobody"])
    assert len(queries) == 1
    assert {u: routes(u) for u in ("kim", "lee", "nobody")} == read
    assert len(queries) == 1  # served from the preload
    with db.unit_of_work() as s:
        s.get_one(User, "lee").notify_channels = "console"
    assert routes("lee") == [Route("console", None)]  # the preload served one notice only
    db.dispose()
