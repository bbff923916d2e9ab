"""MicroBatcher: groups concurrent requests into one backend call.

Requests wait at most `max_delay_ms` after the first one of a batch arrives,
and a batch never holds more than `max_batch_size` rows. With
`flush_when_idle` (the default) a batch leaves at once when no other batch
is running: waiting then would only add latency, while under load requests
pile up behind the running batch and are grouped anyway. The queue is
bounded in rows (images): a full queue is an immediate QueueFullError
(RESOURCE_EXHAUSTED), never an unbounded wait. A request whose deadline has
passed when its batch is formed is failed with DeadlineExceededError and not
run. A failed batch fails exactly the requests in it.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from assay.server.errors import (
    AssayError,
    BackendError,
    DeadlineExceededError,
    InvalidArgumentError,
    QueueFullError,
    UnavailableError,
)
from assay.server.models.backend import batch_deadline

Arrays = dict[str, np.ndarray]
_CLOCK_SLACK_S = 1e-4
InferFn = Callable[[Mapping[str, np.ndarray]], Awaitable[Arrays]]


@dataclass(eq=False)
class _Pending:
    inputs: Mapping[str, np.ndarray]
    rows: int
    future: asyncio.Future[Arrays]
    deadline: float | None
    enqueued_at: float


@dataclass
class BatcherHooks:
    """Observers for metrics; each is called on the event loop."""

    on_batch: Callable[[int], None] = field(default=lambda rows: None)
    on_queue_depth: Callable[[int], None] = field(default=lambda rows: None)


class MicroBatcher:
    """Batches `submit()` calls in front of an async inference function."""

    def __init__(
        self,
        fn: InferFn,
        *,
        max_batch_size: int,
        max_delay_ms: float,
        max_queue: int,
        max_inflight_batches: int = 2,
        flush_when_idle: bool = True,
        name: str = "model",
        hooks: BatcherHooks | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_inflight_batches < 1:
            raise ValueError("max_batch_size, max_queue and max_inflight_batches must be >= 1")
        self._fn = fn
        self.max_batch_size = max_batch_size
        self._max_delay_s = max_delay_ms / 1000.0
        self._max_queue = max_queue
        self._flush_when_idle = flush_when_idle
        self._name = name
        self._hooks = hooks or BatcherHooks()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(max_inflight_batches)
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._collecting: list[_Pending] = []
        self._closed = False

    @property
    def queued_rows(self) -> int:
        """Rows (images) waiting to be batched."""
        return self._queued_rows

    async def submit(
        self, inputs: Mapping[str, np.ndarray], deadline: float | None = None
    ) -> Arrays:
        """Run `inputs` (leading dimension = rows) as part of a batch.

        Args:
            inputs: named arrays sharing their leading dimension.
            deadline: absolute `loop.time()` after which the rows are not run.

        Returns:
            The outputs for exactly these rows.
        """
        rows = _leading_dim(inputs)
        if self._closed:
            raise UnavailableError(f"model {self._name!r} is shutting down")
        if self._queued_rows + rows > self._max_queue:
            raise QueueFullError(
                f"model {self._name!r}: batching queue is full ({self._queued_rows} images "
                f"waiting, limit {self._max_queue}, this request {rows}); retry with backoff"
            )
        # Admission is all-or-nothing: a request larger than one batch is queued
        # as several chunks at once, so it never half-fails on a full queue.
        step = self.max_batch_size
        pending = [
            self._enqueue({k: v[start : start + step] for k, v in inputs.items()}, deadline)
            for start in range(0, rows, step)
        ]
        self._ensure_worker()
        self._wakeup.set()
        try:
            if len(pending) == 1:
                return await pending[0].future
            parts = await asyncio.gather(*(p.future for p in pending), return_exceptions=True)
        except asyncio.CancelledError:
            for p in pending:
                p.future.cancel()
            raise
        arrays: list[Arrays] = []
        for part in parts:
            if isinstance(part, BaseException):
                raise part
            arrays.append(part)
        return _concat(arrays)

    def _enqueue(self, inputs: Mapping[str, np.ndarray], deadline: float | None) -> _Pending:
        loop = asyncio.get_running_loop()
        rows = _leading_dim(inputs)
        pending = _Pending(inputs, rows, loop.create_future(), deadline, loop.time())
        self._queue.append(pending)
        self._queued_rows += rows
        self._hooks.on_queue_depth(self._queued_rows)
        return pending

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name=f"batcher-{self._name}"
            )

    async def _work(self) -> None:
        while True:
            await self._slots.acquire()
            batch = await self._collect()
            task = asyncio.get_running_loop().create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take(self, batch: list[_Pending], rows: int) -> int:
        """Move queued requests into batch while they fit; return its rows."""
        while self._queue and rows + self._queue[0].rows <= self.max_batch_size:
            item = self._queue.popleft()
            self._queued_rows -= item.rows
            if not item.future.done():
                batch.append(item)
                rows += item.rows
        self._hooks.on_queue_depth(self._queued_rows)
        return rows

    async def _collect(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        batch: list[_Pending] = []
        self._collecting = batch  # visible to aclose() while we wait
        rows = 0
        while True:
            rows = self._take(batch, rows)
            timer = None
            if batch:
                full = rows >= self.max_batch_size or bool(self._queue)
                idle = self._flush_when_idle and not self._running
                flush_at = batch[0].enqueued_at + self._max_delay_s
                if full or idle or loop.time() >= flush_at - _CLOCK_SLACK_S:
                    self._collecting = []  # dispatched: aclose() must let it finish
                    return batch
                timer = loop.call_at(flush_at, self._wakeup.set)
            self._wakeup.clear()
            try:
                await self._wakeup.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    async def _execute(self, batch: list[_Pending]) -> None:
        try:
            live = self._drop_expired(batch)
            if live:
                await self._run_batch(live)
        finally:
            self._slots.release()

    def _drop_expired(self, batch: list[_Pending]) -> list[_Pending]:
        now = asyncio.get_running_loop().time()
        live = []
        for item in batch:
            if item.future.done():
                continue
            if item.deadline is not None and item.deadline <= now:
                item.future.set_exception(
                    DeadlineExceededError(
                        f"model {self._name!r}: deadline passed while queued; "
                        "raise the deadline or lower the load"
                    )
                )
                continue
            live.append(item)
        return live

    async def _run_batch(self, live: list[_Pending]) -> None:
        rows = sum(item.rows for item in live)
        inputs = live[0].inputs if len(live) == 1 else _concat([i.inputs for i in live])
        self._hooks.on_batch(rows)
        deadlines = [item.deadline for item in live]
        batch_deadline.set(
            None if None in deadlines else max(d for d in deadlines if d is not None)
        )
        try:
            outputs = await self._fn(inputs)
            _check_rows(outputs, rows)
        except Exception as exc:
            error = exc if isinstance(exc, AssayError) else BackendError(f"batch failed: {exc}")
            for item in live:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        offset = 0
        for item in live:
            end = offset + item.rows
            if not item.future.done():
                item.future.set_result({k: v[offset:end] for k, v in outputs.items()})
            offset = end

    async def aclose(self) -> None:
        """Fail queued requests with UNAVAILABLE and stop; running batches finish."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for item in (*self._collecting, *self._queue):
            if not item.future.done():
                item.future.set_exception(UnavailableError(f"model {self._name!r} shut down"))
        self._queue.clear()
        self._collecting = []
        self._queued_rows = 0
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


def _leading_dim(inputs: Mapping[str, np.ndarray]) -> int:
    dims = {np.shape(v)[0] if np.ndim(v) else -1 for v in inputs.values()}
    if len(dims) != 1 or -1 in dims:
        raise InvalidArgumentError(
            f"inputs must share one leading (batch) dimension, got shapes "
            f"{ {k: np.shape(v) for k, v in inputs.items()} }"
        )
    rows = dims.pop()
    if rows < 1:
        raise InvalidArgumentError("a request must hold at least one row")
    return int(rows)


def _concat(parts: Sequence[Mapping[str, np.ndarray]]) -> Arrays:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _check_rows(outputs: Mapping[str, np.ndarray], rows: int) -> None:
    for name, value in outputs.items():
        if np.ndim(value) == 0 or value.shape[0] != rows:
            raise BackendError(
                f"backend returned {name!r} with shape {np.shape(value)} for a batch of {rows}"
            )
