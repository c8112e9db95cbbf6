"""The web app's export served next to the API, and the stream endpoint's JSON form, over the app in-process:
pages with a CSP that allows only the export's own inline scripts (by hash), the API's 404 stays JSON,
nothing outside the export is served, and the snapshot holds only the caller's positions."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from fastapi.testclient import TestClient

from autotrade.api.web import web_dir
from autotrade.store.db import Database
from tests.api.conftest import Calls, add_strategy, api, auth, signup_login  # noqa: F401 - the fixture

pytestmark = pytest.mark.skipif(
    not (web_dir() / "index.html").is_file(), reason="web/out not built (make install)"
)


def test_pages_with_their_csp_and_nothing_else(api: tuple[TestClient, Database, Calls]) -> None:  # noqa: F811
    client, _, _ = api
    r = client.get("/login/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    script_src = re.search(r"script-src ([^;]*)", csp)
    assert script_src and "'unsafe-inline'" not in script_src.group(1) and "frame-ancestors 'none'" in csp
    inline = re.findall(rb"<script(?![^>]*\ssrc=)[^>]*>(.*?)</script>", r.content, re.DOTALL)
    assert inline  # Next's bootstrap scripts: each one allowed by its hash
    for body in inline:
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert client.get("/favicon.ico").headers["content-type"] == "image/vnd.microsoft.icon"
    assert client.get("/no-such-page/").status_code == 404
    api_404 = client.get("/api/no-such-route")
    assert api_404.status_code == 404 and api_404.json() == {"detail": "Not Found"}
    for escape in ("/../pyproject.toml", "/%2e%2e/pyproject.toml", "/..%2fpyproject.toml"):
        assert b"[project]" not in client.get(escape).content
    assert client.get("/openapi.json").json()["paths"]["/api/web/stream"]


def test_stream_snapshot_is_the_callers_own(api: tuple[TestClient, Database, Calls]) -> None:  # noqa: F811
    client, db, _ = api
    alice, bob = signup_login(client, "alice@example.com"), signup_login(client, "bob@example.com")
    assert client.get("/api/web/stream").status_code == 401
    ids = {}
    for token, account in ((alice, "11111111111"), (bob, "22222222222")):
        me = client.get("/api/web/stream", headers=auth(token))
        assert me.status_code == 200 and me.json()["positions"] == []
        from autotrade.api.auth import SessionTokens

        ids[account] = SessionTokens(b"t" * 32).verify(token).user_id  # type: ignore[union-attr]
        add_strategy(db, ids[account], account)
    snap = client.get("/api/web/stream", headers=auth(alice)).json()
    (pos,) = snap["positions"]
    assert pos["account_no"] == "11111111111" and "22222222222" not in str(snap)
    # the fixture's price lookup answers 72,800 for every code: (72,800 - 70,000) / 70,000 = +4.00 %,
    # unrealized (72,800 - 70,000) x 5 held = 14,000
    assert pos["current_price"] == 72_800 and pos["profit_rate"] == 4.0 and snap["unrealized_pnl"] == 14_000


@pytest.mark.timeout(30)  # a stream that outlives its session never ends: the test fails here then
def test_stream_ends_with_the_session(api: tuple[TestClient, Database, Calls]) -> None:  # noqa: F811
    from datetime import timedelta

    from autotrade.api.auth import Principal, SessionTokens

    client, db, _ = api
    token = signup_login(client, "carol@example.com")
    user_id = SessionTokens(b"t" * 32).verify(token).user_id  # type: ignore[union-attr]
    add_strategy(db, user_id, "33333333333")
    short = SessionTokens(b"t" * 32, ttl=timedelta(seconds=2)).issue(Principal(user_id, "user"))
    # the in-process client reads the whole answer: it ends only because the token expires
    r = client.get("/api/web/stream", headers={**auth(short), "Accept": "text/event-stream"}, timeout=20)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [block for block in r.text.split("\n\n") if block.startswith("event:")]
    assert events[0].startswith("event: snapshot") and '"33333333333"' in events[0]
    assert events[-1].startswith("event: expired")
    assert client.get("/api/web/stream", headers=auth(short)).status_code == 401
