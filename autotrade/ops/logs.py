"""Log lines a machine can read: ``AUTOTRADE_LOG_FORMAT=json`` makes every console log line one JSON object
with the time, level, logger, message, and the ids that tie it to its work: the Prefect flow run and task
run (from the record, as Prefect's run loggers attach them, or from the run context), and the API request
(``request_id``: the caller's ``X-Request-ID`` or a new one, set by the API's middleware and echoed in the
response). The message and any exception text are scrubbed of credential-shaped text as notifications are.

``text`` (the default) leaves Python's and Prefect's formats as they are. Only the console (stream)
handlers change; what Prefect ships to its server is untouched.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("autotrade_request_id", default=None)


def _run_ids(record: logging.LogRecord) -> tuple[str | None, str | None]:
    flow_run = getattr(record, "flow_run_id", None)
    task_run = getattr(record, "task_run_id", None)
    if flow_run is None or task_run is None:
        try:
            from prefect.context import FlowRunContext, TaskRunContext

            task_ctx = TaskRunContext.get()
            flow_ctx = FlowRunContext.get()
        except Exception:  # logging never fails because of the orchestrator
            task_ctx = flow_ctx = None
        if task_run is None and task_ctx is not None:
            task_run = task_ctx.task_run.id
            flow_run = flow_run or task_ctx.task_run.flow_run_id
        if flow_run is None and flow_ctx is not None and flow_ctx.flow_run is not None:
            flow_run = flow_ctx.flow_run.id
    return (str(flow_run) if flow_run else None), (str(task_run) if task_run else None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # Imported here: the notify package is heavy, and every CLI command imports this module.
        from autotrade.notify.format import scrub_secrets

        flow_run, task_run = _run_ids(record)
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub_secrets(record.getMessage()),
            "flow_run_id": flow_run,
            "task_run_id": task_run,
            "request_id": request_id.get(),
        }
        if record.exc_info:
            line["exception"] = scrub_secrets(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(fmt: str) -> None:
    """Apply the log format to every console handler there is (the root's and each logger's, Prefect's
    included); with none on the root, one to stderr is added. Calling it again changes nothing more."""
    if fmt != "json":
        return
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]  # fmt: skip
    formatter = JsonFormatter()
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setFormatter(formatter)
    root = logging.getLogger()
    if not any(isinstance(h, logging.StreamHandler) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        root.addHandler(handler)
