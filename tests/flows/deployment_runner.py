"""The evening flow served as the deployment ``evening_signal_and_buy/evening`` (the name ``prefect deploy``
gives it, which the API's execute starts), each of its runs in a process of its own as a runner or a process
worker starts them (``flow.serve``).

    AUTOTRADE_TEST_RUNTIME=FILE python -m tests.flows.deployment_runner

FILE holds the pickled (settings, clock) of the runs: the test's database, simulator and master key, and a
clock on the simulator's virtual day (a deployed run reads the wall clock). A flow run's process imports this
module again before it runs (multiprocessing's spawn re-imports the main module as ``__mp_main__``) and sets
that runtime; the serving process itself never builds one.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

if __name__ == "__mp_main__" and os.environ.get("AUTOTRADE_TEST_RUNTIME"):  # a flow run's process
    from autotrade.runtime import build_runtime, set_runtime

    settings, clock = pickle.loads(Path(os.environ["AUTOTRADE_TEST_RUNTIME"]).read_bytes())  # noqa: S301
    set_runtime(build_runtime(settings, clock))

if __name__ == "__main__":
    from flows.evening_signal_and_buy import evening_signal_and_buy

    evening_signal_and_buy.serve(name="evening", print_starting_message=True)
