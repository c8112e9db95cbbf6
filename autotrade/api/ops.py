"""Operator routes for running the product: an account's incident report (autotrade/report/incident.py)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse

from autotrade.api import schemas as sc
from autotrade.api.app import ApiDeps, CurrentOperator
from autotrade.ops.logs import request_id
from autotrade.report.incident import UnknownAccount, as_json, incident_report, markdown

log = logging.getLogger(__name__)
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def ops_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter(prefix="/api/admin", tags=["operations"])

    @router.get(
        "/incident/{account_no}",
        responses={200: {"content": {"application/json": {}, "text/markdown": {}},
                         "description": "the report as JSON, or Markdown with format=markdown"}},
    )  # fmt: skip
    def incident(
        account_no: Annotated[str, PathParam(pattern=sc.ACCOUNT_NO)],
        since: Annotated[datetime, Query(description="ISO time; without an offset it is Seoul time")],
        _: CurrentOperator,
        format: Annotated[str, Query(pattern="^(json|markdown)$")] = "json",
    ) -> Any:
        """Operator: every gateway request, refusal, kill-switch decision, order, fill and trade of the
        account since ``since``, and its money at risk now (from the database; no broker call)."""
        try:
            report = incident_report(deps.db, account_no, since)
        except UnknownAccount:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such account") from None
        if format == "markdown":
            return PlainTextResponse(markdown(report), media_type="text/markdown; charset=utf-8")
        return as_json(report)

    return router


def include_ops(app: FastAPI, deps: ApiDeps) -> None:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from autotrade.config import broker_urls, get_settings
    from autotrade.ops.metrics import api_registry, readiness

    app.include_router(ops_router(deps))
    registry, latency = api_registry(deps.db)

    @app.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
    def metrics() -> Response:
        """Prometheus exposition (autotrade/ops/metrics.py says what is there). No authentication: serve the
        API where only the operator's network reaches it, or block /metrics at the proxy."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/ready", include_in_schema=False)  # infrastructure, not the product API (503 by design)
    async def ready(request: Request) -> JSONResponse:
        """200 when the database answers and the broker's REST and feed hosts accept a connection, else 503
        naming the failed checks."""
        checks = await readiness(request.app.state.deps.db, *broker_urls(get_settings()))
        code = status.HTTP_200_OK if all(checks.values()) else status.HTTP_503_SERVICE_UNAVAILABLE
        return JSONResponse({"ready": all(checks.values()), "checks": checks}, status_code=code)

    @app.middleware("http")
    async def request_ids(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Every request gets an id (the caller's X-Request-ID when it is sane, else a new one): it is on
        each log line written while the request is served (AUTOTRADE_LOG_FORMAT=json) and in the answer."""
        given = request.headers.get("x-request-id", "")
        rid = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        try:
            response = await call_next(request)
            route = getattr(request.scope.get("route"), "path", "unmatched")  # a template: bounded labels
            latency.labels(request.method, route, str(response.status_code)).observe(
                time.perf_counter() - started
            )
            log.info("%s %s %s in %.0f ms", request.method, request.url.path, response.status_code,
                     (time.perf_counter() - started) * 1000)  # fmt: skip
        finally:
            request_id.reset(token)
        response.headers["X-Request-ID"] = rid
        return response
