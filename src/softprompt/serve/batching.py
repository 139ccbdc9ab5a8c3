"""Micro-batching: concurrent requests are queued and run together by one worker thread.

A batch costs nothing when there is nothing to batch: a request that finds the worker idle runs at once, and the
requests that arrive while a batch runs are gathered into the next one (up to `max_batch_size` rows). Under load the
clients a batch answered send their next requests within moments of each other: so that the first of them does not
run alone and split the rest into a second pass, the next batch waits for as many rows as the last one held, for at
most a tenth of the time the last one took (GATHER). A lone client's batches hold one row: it never waits.

With `max_wait_ms` above 0 an idle worker also holds a batch that is not full for up to that long, waiting for more:
larger batches at low load, for that much latency. A request larger than a batch is split over several and answered
when all its rows are done. With max_batch_size 1 the model runs one row at a time.

Why each batch started is counted (`Scheduler.starts`): `idle` (as many rows were queued as the last batch held, or
the worker was closing), `full` (max_batch_size rows), or `waited` (the wait for more ran out).
"""

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future

GATHER = 0.1  # under load, the next batch waits for its rows at most this fraction of the last batch's time


class _Request:
    def __init__(self, rows: list):
        self.rows = rows
        self.future: Future = Future()
        self.results: list = [None] * len(rows)
        self.taken = 0  # rows handed to a batch
        self.done = 0  # rows answered
        self.arrival = time.monotonic()


class Scheduler:
    """Runs `run(rows) -> results` (one result per row) on batches of rows gathered from concurrent `submit` calls."""

    def __init__(self, run: Callable[[list], list], max_batch_size: int = 32, max_wait_ms: float = 0.0):
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size must be at least 1 and max_wait_ms not negative")
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.batches = 0  # batches run so far
        self.starts: Counter[str] = Counter()  # why each batch started: idle, full or waited
        self._last_rows, self._last_seconds = 1, 0.0  # the last batch's rows and time: what the next one waits for
        self._running_since: float | None = None  # when the batch being run started (monotonic), None when idle
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self._closed = False
        self._cond = threading.Condition()
        self._worker = threading.Thread(target=self._loop, name="softprompt-batcher", daemon=True)
        self._worker.start()

    def submit(self, rows: list) -> Future:
        """Queue rows; the future gives their results in order (or the exception their batch raised)."""
        request = _Request(list(rows))
        if not request.rows:
            request.future.set_result([])
            return request.future
        with self._cond:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self._queue.append(request)
            self._queued_rows += len(request.rows)
            self._cond.notify()
        return request.future

    def close(self, timeout: float | None = 30) -> None:
        """Answer what is queued, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._worker.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ----- the worker -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while (parts := self._next_batch()) is not None:
            if parts:
                self._execute(parts)

    def _next_batch(self) -> list[tuple[_Request, int, int]] | None:
        """Wait for a batch to fill or its wait to end; returns (request, first row, end) parts, None when closed."""
        with self._cond:
            while True:
                if not self._queue:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                if self._queued_rows >= self.max_batch_size:
                    self.starts["full"] += 1
                    break
                expected = min(self._last_rows, self.max_batch_size)
                patience = self.max_wait if self.max_wait else GATHER * self._last_seconds
                if (self._queued_rows >= expected and not self.max_wait) or self._closed:
                    self.starts["idle"] += 1
                    break
                left = self._queue[0].arrival + patience - time.monotonic()
                if left <= 0:
                    self.starts["waited"] += 1
                    break
                self._cond.wait(left)
            parts, room = [], self.max_batch_size
            while self._queue and room:
                request = self._queue[0]
                if request.taken == 0 and not request.future.set_running_or_notify_cancel():
                    self._queue.popleft()  # cancelled while queued
                    self._queued_rows -= len(request.rows)
                    continue
                n = min(room, len(request.rows) - request.taken)
                parts.append((request, request.taken, request.taken + n))
                request.taken += n
                self._queued_rows -= n
                room -= n
                if request.taken == len(request.rows):
                    self._queue.popleft()
            return parts

    def busy_seconds(self) -> float:
        """How long the batch being run has been running; 0 when idle."""
        started = self._running_since
        return 0.0 if started is None else time.monotonic() - started

    def _execute(self, parts: list[tuple[_Request, int, int]]) -> None:
        self.batches += 1
        self._running_since = started = time.monotonic()
        self._last_rows = sum(hi - lo for _, lo, hi in parts)
        try:
            self._answer(parts)
        except Exception as e:  # noqa: BLE001  one bad request must not fail the others of its batch
            if len({id(request) for request, _, _ in parts}) == 1:
                self._fail(parts[0][0], e)
                return
            for part in parts:  # run each request's part alone, so that only the culprit fails
                try:
                    self._answer([part])
                except Exception as e:  # noqa: BLE001
                    self._fail(part[0], e)
        finally:
            self._running_since = None
            self._last_seconds = time.monotonic() - started

    def _answer(self, parts: list[tuple[_Request, int, int]]) -> None:
        live = [(r, lo, hi) for r, lo, hi in parts if not r.future.done()]
        if not live:
            return
        results = self.run([row for r, lo, hi in live for row in r.rows[lo:hi]])
        if len(results) != sum(hi - lo for _, lo, hi in live):
            raise RuntimeError(
                f"the batch function returned {len(results)} results for {sum(hi - lo for _, lo, hi in live)} rows"
            )
        k = 0
        for request, lo, hi in live:
            request.results[lo:hi] = results[k : k + hi - lo]
            k += hi - lo
            request.done += hi - lo
            if request.done == len(request.rows):
                request.future.set_result(request.results)

    @staticmethod
    def _fail(request: _Request, error: Exception) -> None:
        if not request.future.done():
            request.future.set_exception(error)
