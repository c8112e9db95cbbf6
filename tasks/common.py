"""Retry policy shared by the tasks: transient failures retry with backoff and jitter, nothing else does."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from sqlalchemy.exc import OperationalError

from autotrade.trading.ports import BrokerUnavailable, NotProcessed, OutcomeUnknown


class RetryBatch(Exception):
    """Some accounts of a batch failed transiently: run the batch again (done accounts do nothing twice)."""


TRANSIENT: tuple[type[BaseException], ...] = (
    RetryBatch,
    BrokerUnavailable,
    NotProcessed,
    OutcomeUnknown,
    ConnectionError,
    TimeoutError,
    OperationalError,
)


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only on errors that can go away (the broker, the network, a busy database).

    The failed state carries the exception itself (results are not persisted). ``state.result()`` is no
    help here: inside an async task it returns a coroutine instead of raising."""
    error = getattr(state, "data", None)
    if not isinstance(error, BaseException):
        return False
    return isinstance(error, TRANSIENT)


RETRY: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": is_transient,
    # Results could carry account data; none of them is persisted or cached.
    "persist_result": False,
    "cache_policy": NO_CACHE,
}
