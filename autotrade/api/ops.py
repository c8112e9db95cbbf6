"""Operator routes for running the product: an account's incident report (autotrade/report/incident.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from autotrade.api import schemas as sc
from autotrade.api.app import ApiDeps, CurrentOperator
from autotrade.domain.krx import KST
from autotrade.ops.logs import request_id
from autotrade.report.incident import UnknownAccount, as_json, incident_report, markdown
from autotrade.store.models import SecurityEvent, User, UserApiKey

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

    @router.get("/users", response_model=list[UserOut])
    def users(_: CurrentOperator) -> list[UserOut]:
        """Operator: every user with their role and their keys' status (no key material)."""
        with deps.db.unit_of_work() as s:
            rows = s.scalars(sa.select(User).order_by(User.email, User.user_id)).all()
            keys: dict[str, list[UserKeyOut]] = {}
            for user_id, account, st in s.execute(
                sa.select(UserApiKey.user_id, UserApiKey.account_no, UserApiKey.api_status).order_by(
                    UserApiKey.id
                )
            ).all():
                keys.setdefault(user_id, []).append(UserKeyOut(account_no=account, api_status=st.value))
            return [UserOut(user_id=u.user_id, email=u.email, role=u.role, keys=keys.get(u.user_id, []))
                    for u in rows]  # fmt: skip

    @router.put(
        "/users/{user_id}/role",
        response_model=UserOut,
        responses={409: {"model": sc.ErrorResponse, "description": "an operator cannot drop their own role"}},
    )
    def set_role(
        user_id: Annotated[str, PathParam(min_length=1, max_length=64)],
        body: RoleRequest,
        op: CurrentOperator,
    ) -> UserOut:
        """Operator: make a user an operator or a plain user again. A security event names the operator and
        the change; it reaches the user's open sessions within seconds. An operator cannot drop their own
        role (another operator does it), so the product never loses its last operator by a slip."""
        if user_id == op.user_id and body.role != "operator":
            raise HTTPException(status.HTTP_409_CONFLICT, "you cannot drop your own operator role")
        now = datetime.now(KST)
        with deps.db.unit_of_work() as s:
            user = s.get(User, user_id, with_for_update=True)
            if user is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, "no such user")
            before, user.role = user.role, body.role
            if before != body.role:
                action = f"role {before} -> {body.role} by operator {op.user_id}"
                s.add(SecurityEvent(at=now, user_id=user_id, account_no=None, rule="role_change",
                                    severity="record", detail="", action_taken=action[:128]))  # fmt: skip
                log.warning("user %s: %s", user_id, action)
            keys = [UserKeyOut(account_no=a, api_status=st.value) for a, st in s.execute(
                sa.select(UserApiKey.account_no, UserApiKey.api_status)
                .where(UserApiKey.user_id == user_id).order_by(UserApiKey.id)
            ).all()]  # fmt: skip
            out = UserOut(user_id=user.user_id, email=user.email, role=user.role, keys=keys)
        if deps.sessions is not None:
            deps.sessions.forget(user_id)
        return out

    @router.get("/prefect", response_model=PrefectOut)
    async def prefect(_: CurrentOperator) -> PrefectOut:
        """Operator: where the Prefect UI is (``PREFECT_UI_URL``, else derived from ``PREFECT_API_URL``;
        ``ui_url`` null when neither is set, as in the embedded mode) and a link per deployment of
        prefect.yaml (to the deployment itself when the Prefect server knows it, with its last run)."""
        return await prefect_links()

    return router


DEPLOYMENTS = (
    ("evening_signal_and_buy", "evening"),
    ("place_buys", "place-buys"),
    ("morning_fill_and_arm", "morning"),
    ("intraday_reconcile", "intraday"),
    ("daily_report", "daily-report"),
    ("backup", "backup"),
    ("weekly_review", "weekly-review"),
    ("monthly_review", "monthly-review"),
)  # prefect.yaml's deployments as flow/deployment names (tests/flows/test_deployment_names.py keeps them so)


class UserKeyOut(BaseModel):
    account_no: str
    api_status: str


class UserOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"user_id": "3f2a9c", "email": "trader@example.com", "role": "user",
                                         "keys": [{"account_no": "12345678901", "api_status": "ACTIVE"}]}]}
    )  # fmt: skip
    user_id: str
    email: str | None
    role: str
    keys: list[UserKeyOut]


class RoleRequest(sc.RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "operator"}]})
    role: Literal["user", "operator"]


class DeploymentLink(BaseModel):
    name: str = Field(description="flow/deployment")
    url: str | None = Field(description="the deployment in the Prefect UI (null: no UI address)")
    last_run_state: str | None = None
    last_run_at: datetime | None = None
    last_run_url: str | None = None


class PrefectOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{
            "ui_url": "http://127.0.0.1:4200", "source": "PREFECT_API_URL",
            "deployments": [{"name": "evening_signal_and_buy/evening",
                             "url": "http://127.0.0.1:4200/deployments/deployment/6b1f0c2e-0000-4000-8000-000000000000",
                             "last_run_state": "Completed", "last_run_at": "2026-11-19T15:40:02+09:00",
                             "last_run_url": "http://127.0.0.1:4200/runs/flow-run/0c1d2e3f-0000-4000-8000-000000000000"}],
        }]}
    )  # fmt: skip
    ui_url: str | None = Field(
        description="the Prefect UI; null when neither PREFECT_UI_URL nor PREFECT_API_URL is set"
    )
    source: str | None = Field(description="the setting the address came from")
    deployments: list[DeploymentLink]


def prefect_ui_url() -> tuple[str | None, str | None]:
    """The Prefect UI's address and the variable it came from."""
    ui = os.environ.get("PREFECT_UI_URL", "").strip()
    if ui:
        return ui.rstrip("/"), "PREFECT_UI_URL"
    api = os.environ.get("PREFECT_API_URL", "").strip().rstrip("/")
    if api:
        return (api[: -len("/api")] if api.endswith("/api") else api), "PREFECT_API_URL"
    return None, None


async def prefect_links(wait: float = 3.0) -> PrefectOut:
    ui, source = prefect_ui_url()
    links = [
        DeploymentLink(name=f"{flow}/{name}", url=f"{ui}/deployments" if ui else None)
        for flow, name in DEPLOYMENTS
    ]
    if ui and os.environ.get("PREFECT_API_URL"):
        try:
            await asyncio.wait_for(_deployment_details(ui, links), wait)
        except Exception as exc:  # the links to the deployments page stay
            log.info("prefect deployments unavailable: %s", type(exc).__name__)
    return PrefectOut(ui_url=ui, source=source, deployments=links)


async def _deployment_details(ui: str, links: list[DeploymentLink]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    # The last run is the newest one that was due by now: the schedule's future runs (never started, no
    # start time) are not it.
    due = FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(before_=datetime.now(UTC)))
    async with get_client() as client:
        for link in links:
            try:
                dep = await client.read_deployment_by_name(link.name)
            except Exception as exc:  # not deployed there: the link to the deployments page stays
                log.debug("deployment %s not found: %s", link.name, type(exc).__name__)
                continue
            link.url = f"{ui}/deployments/deployment/{dep.id}"
            runs = await client.read_flow_runs(
                flow_run_filter=due,
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=1,
            )
            if runs:
                run = runs[0]
                link.last_run_state = run.state.name if run.state else None
                link.last_run_at = run.start_time or run.expected_start_time
                link.last_run_url = f"{ui}/runs/flow-run/{run.id}"


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
