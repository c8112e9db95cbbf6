"""Operator routes for running the product: an account's incident report (autotrade/report/incident.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, status
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse

from autotrade.api import schemas as sc
from autotrade.api.app import ApiDeps, CurrentOperator
from autotrade.report.incident import UnknownAccount, as_json, incident_report, markdown


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
    app.include_router(ops_router(deps))
