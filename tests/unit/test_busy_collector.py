"""While many accounts are worked on, the garbage collector leaves the objects that were there before alone
and runs less often; when the last such run leaves, both go back as they were, and garbage made meanwhile
is still collected."""

from __future__ import annotations

import gc
import threading
import weakref

from autotrade.runtime import BUSY_GC_THRESHOLDS, many_accounts_at_once


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_the_collector_is_tuned_while_busy_and_restored_after() -> None:
    before = gc.get_threshold()
    assert before != BUSY_GC_THRESHOLDS
    assert gc.get_freeze_count() == 0
    with many_accounts_at_once():
        assert gc.get_threshold() == BUSY_GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        with many_accounts_at_once():  # a second run in the same process
            assert gc.get_threshold() == BUSY_GC_THRESHOLDS
        assert gc.get_threshold() == BUSY_GC_THRESHOLDS  # the first one is still busy
        garbage = weakref.ref(Node())
        assert garbage() is not None
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert garbage() is None, "a cycle made while busy was never collected"


def test_runs_in_several_threads_restore_once_the_last_one_leaves() -> None:
    before = gc.get_threshold()
    inside, leave = threading.Barrier(3), threading.Event()
    seen: list[tuple[int, ...]] = []

    def run() -> None:
        with many_accounts_at_once():
            inside.wait(timeout=10)
            leave.wait(timeout=10)
            seen.append(gc.get_threshold())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait(timeout=10)
    assert gc.get_threshold() == BUSY_GC_THRESHOLDS
    leave.set()
    for t in threads:
        t.join(timeout=10)
    assert seen == [BUSY_GC_THRESHOLDS, BUSY_GC_THRESHOLDS]
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
