"""The running product for browser tests: the simulator under a virtual clock, the database (SQLite and
PostgreSQL), the API with the web app's export served by uvicorn on 127.0.0.1 in a thread of its own (its own
runtime, database pool and broker access, as the API process has in production), and Debian's Chromium driven
by Playwright. The flows run in the test's event loop under Prefect's test harness."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time as walltime
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest

from autotrade.api.web import web_dir
from autotrade.demo.stack import Stack, embedded_stack
from autotrade.domain.krx import KST

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
SHOTS = Path(os.environ.get("AUTOTRADE_WEB_SHOTS", "/tmp/web-shots"))  # noqa: S108 - where the lead looks
DAY1, DAY2 = date(2026, 11, 18), date(2026, 11, 19)  # Wednesday, Thursday
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} missing (apt-get install chromium; .ci/run installs it)"
    if not (web_dir() / "index.html").is_file():
        return "web/out not built (make install)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Chromium (async API: the tests run flows in the same event loop)."""
    why = _missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@dataclass
class Product:
    stack: Stack
    base_url: str
    api_runtime: Any

    async def shot(self, page: Any, name: str) -> None:
        """A full-page screenshot into /tmp/web-shots/, and the page must pass axe-core with no serious or
        critical violation."""
        SHOTS.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, tiny
        await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        violations = await axe(page)
        assert not violations, (name, violations)


AXE = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "axe-core" / "axe.min.js"


async def axe(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page (evaluated through the DevTools protocol, which
    the page's CSP does not govern; the page itself never loads it)."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE.read_text(encoding="utf-8") + "\n;0")
    found: list[str] = await page.evaluate(
        """axe.run(document, {resultTypes: ['violations']}).then(r => r.violations
            .filter(v => v.impact === 'serious' || v.impact === 'critical')
            .map(v => `${v.id} (${v.impact}): ` +
                 v.nodes.map(n => n.target.join(' ')).slice(0, 3).join(', ')))"""
    )
    return found


class ApiServer:
    """uvicorn on a free 127.0.0.1 port in a daemon thread; stops when the test ends."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        from autotrade.sim.server import free_port

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, name="web-test-api", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = walltime.monotonic() + 20
        while not self.server.started:
            if walltime.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API did not start")
            walltime.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
async def product(
    browser: Any, prefect_server: None, db_url: str, tmp_path: Path
) -> AsyncIterator[Product]:
    from autotrade.access import GatewayAccess
    from autotrade.api.app import create_app
    from autotrade.api.service import build_deps
    from autotrade.runtime import Runtime
    from autotrade.store.db import Database

    start = datetime.combine(DAY1, time(15, 0), tzinfo=KST)
    # speed 1: once the watch starts the market moves in real time, so only the test's price move fires a tier
    with embedded_stack(
        tmp_path, seed=11, stocks=12, start=start, database_url=db_url, notifications=io.StringIO(), speed=1.0
    ) as stack:
        api_db = Database(db_url)
        clock = stack.sim.engine.read_clock
        api_rt = Runtime(stack.settings, api_db, clock, GatewayAccess(stack.settings, api_db, clock=clock))
        try:
            with ApiServer(create_app(build_deps(api_rt))) as base_url:
                yield Product(stack, base_url, api_rt)
        finally:
            await stack.access.aclose()
            api_db.dispose()


def evening_scan(stack: Stack, day: date, rows: int = 6) -> None:
    import random

    stack.at(day, time(15, 36))
    stack.write_scan(day, random.Random(day.toordinal()), rows=rows)
    stack.at(day, time(15, 40))


async def wait_for(predicate: Any, seconds: float, what: str) -> None:
    deadline = walltime.monotonic() + seconds
    while not predicate():
        if walltime.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)

