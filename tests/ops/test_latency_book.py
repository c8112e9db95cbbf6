"""The broker response times kept for ``broker_latency``: sub-millisecond answers add up (summed unrounded,
saved as whole milliseconds with the fraction carried to the next save)."""

from __future__ import annotations

from datetime import date

from autotrade.ops.worker_metrics import LatencyBook

DAY = date(2026, 11, 23)


def test_sub_millisecond_answers_add_up_across_saves() -> None:
    book = LatencyBook()
    for _ in range(10):
        book.add(DAY, "kt10000", 0.35)
    assert book.take() == {(DAY, "kt10000"): [10, 3, 0]}  # 3.5 ms: 3 saved, 0.5 carried
    for _ in range(10):
        book.add(DAY, "kt10000", 0.35)
    assert book.take() == {(DAY, "kt10000"): [10, 4, 0]}  # 0.5 + 3.5 = 4 ms
    book.add(DAY, "ka10001", 12.6)
    assert book.take() == {(DAY, "ka10001"): [1, 12, 13]}
    assert book.take() == {}
