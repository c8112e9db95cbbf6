"""Delivery off the caller's thread: a bounded queue and one worker thread in front of the dispatcher.

The price watch and the sells run on an event loop; a channel that is slow (Slack answering 429 with a
long ``Retry-After``, an SNS endpoint that never answers) must not hold it. ``dispatch`` therefore only
puts the notice on a bounded queue and returns at once; the worker thread does the routing, the sends,
the retries and their waits. When the queue is full the notice is dropped, never waited for: the drop is
recorded as a delivery failure (channel ``queue``), counted, logged at ERROR, and the operator is told how
many were dropped once the worker has caught up. A sell never waits for a notice.

Nothing is silently lost at the end: ``flush(timeout)`` waits (bounded) until the queue is empty and the
worker idle; ``close(timeout)`` flushes, stops the worker and records whatever is still undelivered. Both
run by themselves when the interpreter (or a worker process of the evening pool) shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime

from autotrade.notify.dispatcher import DeliveryFailure, FailureRecorder, NotificationDispatcher, _utcnow
from autotrade.notify.messages import error_occurred
from autotrade.notify.model import Notification

log = logging.getLogger("autotrade.notify")

QUEUE_CHANNEL = "queue"  # the channel name of failures that never reached a channel
_RECORDS_MAX = 100_000  # drop records waiting for the recorder; beyond it a drop is counted and logged only


class BackgroundDispatcher:
    """``dispatch`` returns at once; a worker thread delivers through ``inner`` (retries, breaker, records).

    ``inner``'s waits between retries are cut short by ``close``: a process that ends does not sit out a
    backoff. The worker starts on the first notice (and again in a forked child, whose copy of the thread
    is gone)."""

    def __init__(
        self,
        inner: NotificationDispatcher,
        *,
        recorder: FailureRecorder | None = None,
        queue_size: int = 1000,
        flush_timeout_seconds: float = 10.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.inner = inner
        self._recorder = recorder
        self.queue_size = queue_size
        self.flush_timeout_seconds = flush_timeout_seconds
        self._clock = clock
        self._queue: queue.Queue[Notification | None] = queue.Queue(maxsize=queue_size)
        # Drops are written to the recorder (a database) by a thread of their own: the caller only counts.
        self._records: queue.Queue[DeliveryFailure | None] = queue.Queue(maxsize=_RECORDS_MAX)
        self._record_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._current: Notification | None = None
        self._closed = False
        self.dropped = 0  # notices refused because the queue was full, since the start
        self.handled = 0  # notices the worker finished (delivered, or recorded as failed)
        self._dropped_untold = 0  # drops the operator has not heard about yet
        inner._sleep = self._wait  # the retry backoff waits on the worker and ends early on close
        inner._stopped = self._stopping.is_set  # and no further attempt starts after close

    # --- the caller's side: never blocks ---

    def preload_routes(self, user_ids: Iterable[str]) -> None:
        """Before notices to many users (see :meth:`NotificationDispatcher.preload_routes`)."""
        self.inner.preload_routes(user_ids)

    def dispatch(self, notification: Notification) -> None:
        """Queue the notice for the worker and return at once. Never raises, never waits."""
        self._queue_up(notification, wait=False)

    def dispatch_waiting(self, notification: Notification) -> None:
        """Queue the notice, waiting for room (each notice at most ``flush_timeout_seconds``) rather than
        dropping it: for notices sent in bulk (an evening tells thousands of users of their orders, many more
        than the queue holds), from a thread that may wait. On an event loop's thread it waits for nothing,
        as :meth:`dispatch` (the loop may be sending sells). Never raises."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._queue_up(notification, wait=True)
        else:
            self._queue_up(notification, wait=False)

    def _queue_up(self, notification: Notification, *, wait: bool) -> None:
        try:
            if self._closed:
                self._drop(notification, "dispatcher closed: not queued", at_once=True)
                return
            self._ensure_worker()
            if wait:
                self._queue.put(notification, timeout=self.flush_timeout_seconds)
            else:
                self._queue.put_nowait(notification)
        except queue.Full:
            waited = f" for {self.flush_timeout_seconds:g} s" if wait else ""
            self._drop(notification, f"queue full ({self.queue_size} waiting{waited}): dropped")
        except Exception as exc:  # the last guard: trading must not fail because notifying did
            log.error("notification %s not queued: %s", notification.kind, type(exc).__name__)

    @property
    def pending(self) -> int:
        """Notices queued and not yet taken by the worker."""
        return self._queue.qsize()

    def _drop(self, notification: Notification, reason: str, *, at_once: bool = False) -> None:
        with self._lock:
            self.dropped += 1
            self._dropped_untold += 1
            total = self.dropped
        log.error(
            "NOTIFICATION DROPPED: %s to %s (%s; %d dropped so far)",
            notification.kind,
            notification.audience,
            reason,
            total,
        )
        failure = self._failure(notification, reason)
        if at_once:
            self._write(failure)
            return
        try:
            self._records.put_nowait(failure)
        except queue.Full:
            log.error("NOTIFICATION DROP NOT RECORDED (%d waiting): %s", _RECORDS_MAX, notification.id)

    def _failure(self, notification: Notification, reason: str) -> DeliveryFailure:
        return DeliveryFailure(
            notification_id=notification.id,
            channel=QUEUE_CHANNEL,
            audience=str(notification.audience),
            kind=notification.kind,
            error=reason[:512],
            attempts=0,
            at=self._clock(),
        )

    def _write(self, failure: DeliveryFailure) -> None:
        if self._recorder is None:
            return
        try:
            self._recorder.record(failure)
        except Exception as exc:
            log.error("recording an undelivered notification failed: %s", type(exc).__name__)

    def _run_records(self) -> None:
        while True:
            failure = self._records.get()
            try:
                if failure is None:
                    return
                self._write(failure)
            finally:
                self._records.task_done()

    # --- the worker ---

    def _ensure_worker(self) -> None:
        pid = os.getpid()
        if self._thread is not None and self._pid == pid and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._pid == pid and self._thread.is_alive():
                return
            self._pid = pid
            self._thread = threading.Thread(target=self._run, name="autotrade-notify", daemon=True)
            self._thread.start()
            self._record_thread = threading.Thread(
                target=self._run_records, name="autotrade-notify-records", daemon=True
            )
            self._record_thread.start()
            _close_at_exit(self)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._current = item
                self.inner.dispatch(item)  # never raises
                self.handled += 1
            except Exception as exc:
                log.error("notification worker: %s", type(exc).__name__)
            finally:
                self._current = None
                self._queue.task_done()
            if self._queue.empty():
                self._tell_operator_of_drops()

    def _tell_operator_of_drops(self) -> None:
        with self._lock:
            untold, self._dropped_untold = self._dropped_untold, 0
        if untold and not self._stopping.is_set():
            self.inner.dispatch(
                error_occurred(
                    "notifications",
                    "queue",
                    f"알림 대기열이 가득 차 {untold}건을 보내지 못했습니다 (누적 {self.dropped}건). "
                    "notification_failures 기록(channel=queue)을 확인하세요.",
                    self._clock(),
                )
            )

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    # --- the end ---

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued notice has been handled, at most ``timeout`` seconds (default: the
        configured flush timeout). True when everything is out; False (logged) when time ran out."""
        limit = self.flush_timeout_seconds if timeout is None else timeout
        deadline = time.monotonic() + limit
        for q, thread in ((self._queue, self._thread), (self._records, self._record_thread)):
            while q.unfinished_tasks:
                if thread is None or not thread.is_alive() or time.monotonic() >= deadline:
                    log.error(
                        "notifications not all handled within %.1f s: %d still queued",
                        limit,
                        q.unfinished_tasks,
                    )
                    return False
                time.sleep(0.01)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Flush (bounded), stop the worker and record what is still undelivered. Later notices are
        dropped and recorded. True when nothing was left behind."""
        if self._closed:
            return True
        drained = self.flush(timeout)
        self._closed = True
        self._stopping.set()  # a retry backoff in progress ends now
        left: list[Notification] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            self._queue.task_done()
            if item is not None:
                left.append(item)
        current = self._current
        if current is not None:
            left.append(current)  # its channels may still answer; recorded as it may not
        unwritten: list[DeliveryFailure] = []
        while True:
            try:
                failure = self._records.get_nowait()
            except queue.Empty:
                break
            self._records.task_done()
            if failure is not None:
                unwritten.append(failure)
        for notification in left:
            log.error(
                "NOTIFICATION NOT DELIVERED at shutdown: %s to %s", notification.kind, notification.audience
            )
            unwritten.append(self._failure(notification, "not delivered before the process ended"))
        for failure in unwritten:
            self._write(failure)
        for q in (self._queue, self._records):
            with contextlib.suppress(queue.Full):
                q.put_nowait(None)  # wakes an idle thread so it ends
        return drained and not left


_open: weakref.WeakSet[BackgroundDispatcher] = weakref.WeakSet()
_hook_lock = threading.Lock()
_hooked = False


def _close_at_exit(dispatcher: BackgroundDispatcher) -> None:
    """Close ``dispatcher`` (bounded by its flush timeout) when this interpreter shuts down. The threading
    module's exit hooks run both at a normal interpreter exit and when a multiprocessing worker ends, while
    the worker thread is still alive; plain ``atexit`` handlers would not run in the latter."""
    global _hooked
    with _hook_lock:
        _open.add(dispatcher)
        if _hooked:
            return
        _hooked = True
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is not None:
            register(_close_all)
        else:  # pragma: no cover - every supported Python has it
            import atexit

            atexit.register(_close_all)
    except RuntimeError:  # the interpreter is already shutting down
        pass


def _close_all() -> None:
    with _hook_lock:
        dispatchers = list(_open)
        _open.clear()
    for dispatcher in dispatchers:
        try:
            dispatcher.close()
        except Exception as exc:
            log.error("closing the notification worker failed: %s", type(exc).__name__)
