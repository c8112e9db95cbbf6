"""AUTOTRADE_LOG_FORMAT=json: the setting turns console log lines into JSON objects carrying the flow run,
task run and API request ids (text otherwise), and no secret given to a log call reaches a line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prefect import flow, task
from prefect.context import TaskRunContext

from autotrade.config import Settings
from autotrade.runtime import build_runtime, set_runtime
from autotrade.store.db import Database
from tests.api.conftest import Calls, api  # noqa: F401 - the fixture

APP_SECRET = "Zx9" * 14  # 42 characters, shaped like a Kiwoom app secret
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyMDAxIn0.c2lnbmF0dXJl"
log = logging.getLogger("autotrade.tests.logs")


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """A console handler on the root logger, as a process has; every stream handler's formatter is put
    back afterwards (configuring JSON changes them all)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    every = [root, *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger))]
    saved = [(h, h.formatter) for lg in every for h in lg.handlers]
    root.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        log.setLevel(level)
        for h, f in saved:
            h.setFormatter(f)


def _json_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]


@task
def place(n: int) -> str:
    log.info("placing %d with Bearer %s and secret %s", n, TOKEN, APP_SECRET)
    ctx = TaskRunContext.get()
    assert ctx is not None
    return str(ctx.task_run.id)


@flow
def trade() -> str:
    log.info("flow starts")
    return place(3)


def test_the_setting_turns_lines_into_json_with_run_ids(
    prefect_server: None, lines: io.StringIO, tmp_path: Path
) -> None:
    text = build_runtime(Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", data_dir=tmp_path))
    log.info("in text")
    assert "INFO autotrade.tests.logs in text" in lines.getvalue() and _json_lines(lines) == []
    text.db.dispose()

    rt = build_runtime(Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", data_dir=tmp_path,
                                log_format="json"))  # fmt: skip
    set_runtime(rt)
    try:
        state = trade(return_state=True)
        task_run = state.result()
    finally:
        set_runtime(None)
        rt.db.dispose()
    flow_run = str(state.state_details.flow_run_id)
    ours = {line["message"].split()[0]: line for line in _json_lines(lines) if line["logger"] == log.name}
    assert ours["flow"]["flow_run_id"] == flow_run and ours["flow"]["task_run_id"] is None
    assert ours["placing"]["flow_run_id"] == flow_run and ours["placing"]["task_run_id"] == task_run
    assert ours["placing"]["level"] == "INFO" and ours["placing"]["request_id"] is None
    assert TOKEN not in lines.getvalue() and APP_SECRET not in lines.getvalue()
    assert "placing 3 with ***" in ours["placing"]["message"]


def test_api_lines_carry_the_request_id(api: tuple[TestClient, Database, Calls], lines: io.StringIO) -> None:  # noqa: F811
    from autotrade.ops.logs import configure_logging

    client, _, _ = api
    logging.getLogger("autotrade.api.ops").setLevel(logging.INFO)
    configure_logging("json")
    r = client.get("/health", headers={"X-Request-ID": "req-42.a"})
    assert r.headers["X-Request-ID"] == "req-42.a"
    bad = client.get("/health", headers={"X-Request-ID": "no spaces allowed"})
    fresh = bad.headers["X-Request-ID"]
    assert fresh != "no spaces allowed" and len(fresh) == 32
    served = [line for line in _json_lines(lines) if line["logger"] == "autotrade.api.ops"]
    assert [(line["request_id"], line["message"]) for line in served] == [
        ("req-42.a", "GET /health 200 in " + served[0]["message"].rsplit(" in ", 1)[1]),
        (fresh, "GET /health 200 in " + served[1]["message"].rsplit(" in ", 1)[1]),
    ]  # fmt: skip
    assert served[0]["flow_run_id"] is None
