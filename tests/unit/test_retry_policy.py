"""Which failures a task retries: transient broker, network and database errors only."""

from __future__ import annotations

import pytest
from prefect.states import Completed, Failed
from sqlalchemy.exc import OperationalError

from autotrade.trading.ports import BrokerUnavailable, OutcomeUnknown
from tasks.common import RetryBatch, is_transient
from tasks.trading import ScanRejected


@pytest.mark.parametrize(
    "error",
    [RetryBatch("2 of 2"), BrokerUnavailable("500"), OutcomeUnknown("timeout"), TimeoutError(),
     ConnectionResetError(), OperationalError("select 1", {}, Exception("locked"))],
)  # fmt: skip
def test_transient_errors_are_retried(error: BaseException) -> None:
    assert is_transient(None, None, Failed(data=error))


@pytest.mark.parametrize("error", [ScanRejected("bad scan"), ValueError("bug"), KeyError("x")])
def test_other_errors_are_not(error: BaseException) -> None:
    assert not is_transient(None, None, Failed(data=error))


def test_a_state_without_an_exception_is_not_retried() -> None:
    assert not is_transient(None, None, Completed(data=3))
    assert not is_transient(None, None, Failed(message="crashed"))
