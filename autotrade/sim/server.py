"""Run the simulator: under uvicorn (uvloop, httptools) in this process's background thread, for tests,
benchmarks and the demo, or in the foreground from the CLI."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from autotrade.sim.app import Simulator, create_app
from autotrade.sim.market import MarketEngine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Admin:
    """A small client of the ``/_sim/`` admin API."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        headers = {"X-Sim-Admin-Token": token} if token else {}
        self._http = httpx.Client(base_url=base_url, timeout=60.0, headers=headers)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self._http.post(path, json=body)
        if r.status_code != 200:
            raise RuntimeError(f"simulator admin {path}: {r.text}")
        data: dict[str, Any] = r.json()
        return data

    def create_account(self, account_no: str, name: str, cash: int) -> dict[str, Any]:
        return self._post("/_sim/accounts", {"account_no": account_no, "name": name, "cash": cash})

    def create_appkey(
        self, account_no: str, appkey: str | None = None, secretkey: str | None = None
    ) -> dict[str, Any]:
        return self._post(
            "/_sim/appkeys", {"account_no": account_no, "appkey": appkey, "secretkey": secretkey}
        )

    def add_stocks(self, stocks: list[dict[str, Any]]) -> dict[str, Any]:
        return self._post("/_sim/stocks", {"stocks": stocks})

    def stocks(self) -> dict[str, Any]:
        data: dict[str, Any] = self._http.get("/_sim/stocks").json()
        return data

    def set_price(self, code: str, price: int) -> dict[str, Any]:
        return self._post("/_sim/prices", {"code": code, "price": price})

    def set_clock(
        self, moment: datetime | None = None, *, speed: float | None = None, stop_at: datetime | None = None
    ) -> dict[str, Any]:
        """Jump to ``moment`` and/or run at ``speed`` (until ``stop_at``, where the clock stops)."""
        body: dict[str, Any] = {}
        if moment is not None:
            body["set"] = moment.isoformat()
        if speed is not None:
            body["speed"] = speed
        if stop_at is not None:
            body["stop_at"] = stop_at.isoformat()
        return self._post("/_sim/clock", body)

    def clock(self) -> datetime:
        return datetime.fromisoformat(self._http.get("/_sim/clock").json()["now"])

    def advance(self, seconds: float) -> dict[str, Any]:
        return self._post("/_sim/clock", {"advance_seconds": seconds})

    def run_until(self, moment: datetime) -> dict[str, Any]:
        return self._post("/_sim/run", {"until": moment.isoformat()})

    def add_fault(self, kind: str, **kw: Any) -> dict[str, Any]:
        return self._post("/_sim/faults", {"kind": kind, **kw})

    def clear_faults(self) -> None:
        self._http.delete("/_sim/faults")

    def faults(self) -> dict[str, Any]:
        data: dict[str, Any] = self._http.get("/_sim/faults").json()
        return data

    def drop_websockets(self) -> int:
        """Close every open WebSocket now, as a restart of the broker's feed server would."""
        return int(self._post("/_sim/websockets/drop", {})["dropped"])

    def expire_tokens(self, appkey: str | None = None) -> None:
        self._post("/_sim/tokens/expire", {"appkey": appkey})

    def account(self, account_no: str) -> dict[str, Any]:
        data: dict[str, Any] = self._http.get(f"/_sim/accounts/{account_no}").json()
        return data

    def close(self) -> None:
        self._http.close()


@dataclass
class RunningSimulator:
    base_url: str
    ws_url: str
    admin: Admin
    simulator: Simulator

    @property
    def engine(self) -> MarketEngine:
        return self.simulator.engine


def build(
    seed: int = 1,
    speed: float = 0.0,
    *,
    page_size: int = 20,
    rate_limit: tuple[float, int] | None = None,
    ping_seconds: float = 10.0,
    **engine_options: Any,
) -> Simulator:
    engine = MarketEngine(seed, speed=speed, **engine_options)
    return Simulator(
        engine, page_size=page_size, rate_limit=rate_limit, ping_seconds=ping_seconds, fault_seed=seed
    )


@contextmanager
def running_simulator(
    seed: int = 1,
    speed: float = 0.0,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    page_size: int = 20,
    rate_limit: tuple[float, int] | None = None,
    ping_seconds: float = 10.0,
    **engine_options: Any,
) -> Iterator[RunningSimulator]:
    """Start the simulator on a free loopback port in a background thread; stop it on exit."""
    sim = build(
        seed, speed, page_size=page_size, rate_limit=rate_limit, ping_seconds=ping_seconds, **engine_options
    )
    port = port or free_port()
    config = uvicorn.Config(
        create_app(sim),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        log_level="warning",
        lifespan="on",
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="kiwoom-simulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the simulator did not start")
        time.sleep(0.02)
    base = f"http://{host}:{port}"
    admin = Admin(base)
    try:
        yield RunningSimulator(base, f"ws://{host}:{port}/api/dostk/websocket", admin, sim)
    finally:
        admin.close()
        server.should_exit = True
        thread.join(timeout=10)


class SimulatorExited(RuntimeError):
    """``autotrade sim serve`` ended or never answered; the message holds the end of its output."""


@contextmanager
def simulator_process(
    *,
    start: datetime,
    seed: int = 3,
    stocks: int = 60,
    port: int | None = None,
    log_path: Path,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Iterator[str]:
    """``autotrade sim serve`` in its own process (benchmarks: no interpreter shared with the client); yields
    its base URL once ``/_sim/clock`` answers, and stops it on exit. Output goes to ``log_path`` (a file, not
    a pipe that nobody reads while the process runs)."""
    import subprocess
    import sys

    port = port or free_port()
    command = [
        sys.executable, "-c", "from autotrade.cli import app; app()", "sim", "serve", "--port", str(port),
        "--seed", str(seed), "--stocks", str(stocks), "--start", start.isoformat(), *extra_args,
    ]  # fmt: skip
    with log_path.open("wb") as out:
        # This interpreter and this package's own CLI, with numbers and a time as arguments.
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)  # noqa: S603
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise SimulatorExited(f"exited with {proc.returncode}: {tail}")
            try:
                httpx.get(f"{base}/_sim/clock", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise SimulatorExited(f"no answer within {timeout:g} s") from None
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
