"""The API refuses request bodies over its bound with 413 before reading them, declared or chunked."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request

from autotrade.api.limits import BodyLimit


def _app(seen: list[int]) -> FastAPI:
    app = FastAPI()
    app.add_middleware(BodyLimit, max_bytes=1000)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        body = await request.body()
        seen.append(len(body))
        return {"bytes": len(body)}

    return app


async def test_bodies_over_the_bound_are_refused_before_the_route_sees_them() -> None:
    seen: list[int] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(_app(seen)), base_url="http://api") as c:
        assert (await c.post("/echo", content=b"x" * 1000)).json() == {"bytes": 1000}
        declared = await c.post("/echo", content=b"x" * 1001)
        assert declared.status_code == 413 and "at most 1000 bytes" in declared.text

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield b"y" * 300

        chunked = await c.post("/echo", content=chunks())
        assert chunked.status_code == 413
    assert seen == [1000]
