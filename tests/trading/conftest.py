from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.trading.test_engine_faults import COVERED

    if COVERED:
        terminalreporter.write_line(f"order protocol crash points covered: {', '.join(sorted(COVERED))}")
