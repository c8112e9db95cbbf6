"""The incident report through the operator API (JSON and Markdown) and the CLI, on SQLite and PostgreSQL:
the figures of the hand-worked ledger of tests/report/test_incident.py; a plain user is refused."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from autotrade.store.db import Database
from tests.api.conftest import Calls, api, auth, make_operator, signup_login  # noqa: F401 - the fixture
from tests.report.test_incident import A1, seed


def test_the_operator_reads_an_incident_report(api: tuple[TestClient, Database, Calls]) -> None:  # noqa: F811
    client, db, _ = api
    seed(db)
    user = signup_login(client, "user@example.com")
    path = f"/api/admin/incident/{A1}"
    assert client.get(path, params={"since": "2026-11-19T09:00"}, headers=auth(user)).status_code == 403
    signup_login(client, "op@example.com")
    make_operator(db, "op@example.com")
    op = signup_login_again(client, "op@example.com")
    r = client.get(path, params={"since": "2026-11-19T09:00"}, headers=auth(op))  # Seoul time
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["counts"] == {"requests": 3, "refusals": 2, "security_events": 1, "orders": 4, "fills": 1,
                              "trades": 1}  # fmt: skip
    assert body["money_at_risk"]["total"] == 1_140_000 and body["since"] == "2026-11-19T09:00:00+09:00"
    # Since 09:02:30 Seoul (00:02:30 UTC): the 09:03 request and event remain, the 09:01 and 09:02 go.
    r = client.get(path, params={"since": "2026-11-19T00:02:30Z", "format": "markdown"}, headers=auth(op))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
    assert "gateway requests 1 (refused 1); security events 1;" in r.text
    assert "**money at risk 1,140,000원**" in r.text
    assert client.get("/api/admin/incident/99999999", params={"since": "2026-11-19T09:00"},
                      headers=auth(op)).status_code == 404  # fmt: skip


def signup_login_again(client: TestClient, email: str) -> str:
    r = client.post("/api/auth/login", json={"email": email, "password": "correct horse battery"})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def test_the_cli_prints_the_report_and_writes_json(db_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from autotrade.cli import app
    from autotrade.store.migrate import upgrade

    upgrade(db_url)
    database = Database(db_url)
    seed(database)
    database.dispose()
    out = tmp_path / "incident.json"
    done = CliRunner().invoke(app, ["incident", A1, "--since", "2026-11-19T09:00", "--json", str(out),
                                    "--url", db_url])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"# Incident report: account {A1} (alice)")
    assert "**money at risk 1,140,000원**" in done.output
    assert json.loads(out.read_text(encoding="utf-8"))["money_at_risk"]["loss_to_stops"] == 60_000
    bad = CliRunner().invoke(app, ["incident", A1, "--since", "yesterday", "--url", db_url])
    assert bad.exit_code == 2
