"""A process worker's flow run command in the fan-out test: Prefect's engine (``python -m prefect.engine``)
with the test's runtime installed first, read from the file ``AUTOTRADE_TEST_RUNTIME`` names (the test's
database, simulator and master key, and a clock on the simulator's virtual day; a deployed run reads the
wall clock)."""

from __future__ import annotations

import os
import pickle
import runpy
from pathlib import Path

if __name__ == "__main__":
    from autotrade.runtime import build_runtime, set_runtime

    settings, clock = pickle.loads(Path(os.environ["AUTOTRADE_TEST_RUNTIME"]).read_bytes())  # noqa: S301
    set_runtime(build_runtime(settings, clock))
    runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
