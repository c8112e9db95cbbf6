"""``autotrade sim serve`` as its own process, spoken to with plain httpx: admin API, token, an order, the
clock set by ``--start``; and ``--start`` without a UTC offset refused."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from autotrade.domain.krx import KST
from autotrade.sim.server import free_port, simulator_process

pytestmark = pytest.mark.timeout(180)

START = "2026-11-24T10:00:00+09:00"  # a Tuesday, a KRX trading day: the continuous session
CLI = [sys.executable, "-c", "from autotrade.cli import app; app()", "sim", "serve"]


def _env() -> dict[str, str]:
    # A wide, plain terminal so the CLI's error text is not wrapped or coloured.
    return {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    start = datetime.fromisoformat(START)
    with simulator_process(start=start, seed=5, log_path=tmp_path / "simulator.log", env=_env()) as base:
        yield base


def test_serve_issues_a_token_and_takes_an_order(served: str) -> None:
    with httpx.Client(base_url=served, timeout=10) as http:
        clock = http.get("/_sim/clock").json()
        assert datetime.fromisoformat(clock["now"]) == datetime(2026, 11, 24, 10, 0, tzinfo=KST)

        r = http.post(
            "/_sim/accounts", json={"account_no": "5550001111", "name": "홍길동", "cash": 100_000_000}
        )
        assert r.status_code == 200, r.text
        key = http.post("/_sim/appkeys", json={"account_no": "5550001111"}).json()
        assert key["account_no"] == "5550001111" and key["appkey"] and key["secretkey"]
        stocks = http.get("/_sim/stocks").json()
        code = min((c for c, s in stocks.items() if s["price"] < 1_000_000), key=lambda c: stocks[c]["price"])

        token = http.post(
            "/oauth2/token",
            json={"grant_type": "client_credentials", "appkey": key["appkey"], "secretkey": key["secretkey"]},
            headers={"Content-Type": "application/json;charset=UTF-8"},
        )
        assert token.status_code == 200
        issued = token.json()
        assert issued["return_code"] == 0 and issued["token"]

        order = http.post(
            "/api/dostk/ordr",
            json={
                "dmst_stex_tp": "KRX",
                "stk_cd": code,
                "ord_qty": "3",
                "ord_uv": "",
                "trde_tp": "3",
                "cond_uv": "",
            },
            headers={
                "Content-Type": "application/json;charset=UTF-8",
                "api-id": "kt10000",
                "authorization": f"Bearer {issued['token']}",
                "cont-yn": "N",
                "next-key": "",
            },
        )
        assert order.status_code == 200 and order.headers["api-id"] == "kt10000"
        body = order.json()
        assert body["return_code"] == 0, body
        assert len(body["ord_no"]) == 7 and body["ord_no"].isdigit()

        account = http.get("/_sim/accounts/5550001111").json()
        assert [(o["order_no"], o["code"], o["filled"]) for o in account["orders"]] == [
            (body["ord_no"], code, 3)
        ]
        # The clock does not move by itself (speed 0): still the --start time.
        assert datetime.fromisoformat(http.get("/_sim/clock").json()["now"]) == datetime.fromisoformat(START)


def test_serve_refuses_a_start_without_offset() -> None:
    result = subprocess.run(
        [*CLI, "--port", str(free_port()), "--seed", "5", "--start", "2026-11-24T10:00"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        check=False,
    )
    assert result.returncode != 0
    assert "offset" in result.stdout + result.stderr


def test_serve_replays_daily_bars(tmp_path: Path) -> None:
    bars = tmp_path / "bars.csv"
    bars.write_text(
        "date,code,name,open,high,low,close,volume\n"
        "2026-11-23,005930,삼성전자,70000,73000,68000,72000,1000\n"
        "2026-11-24,005930,삼성전자,71500,72000,65000,66000,1000\n",
        encoding="utf-8",
    )
    start = datetime(2026, 11, 23, 8, 0, tzinfo=KST)
    with (
        simulator_process(
            start=start, log_path=tmp_path / "sim.log", extra_args=["--data", str(bars)]
        ) as base,
        httpx.Client(base_url=base, timeout=10) as http,
    ):
        assert list(http.get("/_sim/stocks").json()) == ["005930"]
        for moment, price in (
            ("2026-11-23T09:00:00+09:00", 70_000),
            ("2026-11-23T15:30:00+09:00", 72_000),
            ("2026-11-24T09:00:00+09:00", 71_500),
            ("2026-11-24T15:30:00+09:00", 66_000),
        ):
            http.post("/_sim/clock", json={"set": moment}).raise_for_status()
            assert http.get("/_sim/stocks").json()["005930"]["price"] == price, moment
        assert "replaying 2 daily bars" in (tmp_path / "sim.log").read_text(encoding="utf-8")


def test_serve_refuses_a_broken_bar_file(tmp_path: Path) -> None:
    bars = tmp_path / "bars.csv"
    bars.write_text("date,code,open,high,low,close\n2026-11-23,005930,70000,69000,68000,68500\n")
    result = subprocess.run(
        [*CLI, "--port", str(free_port()), "--data", str(bars)],
        capture_output=True, text=True, timeout=60, env=_env(), check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "must contain" in result.stdout + result.stderr
