import asyncio
from collections.abc import Mapping

import numpy as np
import pytest

from assay.server.errors import (
    BackendError,
    DeadlineExceededError,
    InvalidArgumentError,
    QueueFullError,
    UnavailableError,
)
from assay.server.models.backend import batch_deadline
from assay.server.models.batcher import BatcherHooks, MicroBatcher


class Recorder:
    """Doubles its input and records the batch sizes it was called with."""

    def __init__(self, delay_s: float = 0.0, fail_on: int | None = None) -> None:
        self.sizes: list[int] = []
        self.delay_s = delay_s
        self.fail_on = fail_on

    async def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.sizes.append(len(x))
        await asyncio.sleep(self.delay_s)
        if self.fail_on is not None and self.fail_on in x[:, 0]:
            raise RuntimeError("boom")
        return {"y": x * 2}


def rows(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array(values, dtype=np.float32).reshape(-1, 1)}


async def test_concurrent_requests_share_one_batch_and_get_their_own_rows() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch_size=8, max_delay_ms=50, max_queue=100)
    results = await asyncio.gather(*(batcher.submit(rows(i, i + 0.5)) for i in range(4)))
    assert fn.sizes == [8]
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out["y"][:, 0], [2 * i, 2 * i + 1])
    await batcher.aclose()


async def test_batches_never_exceed_max_batch_size() -> None:
    fn = Recorder(delay_s=0.01)
    batcher = MicroBatcher(fn, max_batch_size=3, max_delay_ms=20, max_queue=100)
    await asyncio.gather(*(batcher.submit(rows(i)) for i in range(10)))
    assert max(fn.sizes) <= 3 and sum(fn.sizes) == 10
    await batcher.aclose()


async def test_lone_request_flushes_after_max_delay() -> None:
    fn = Recorder()
    batcher = MicroBatcher(
        fn, max_batch_size=64, max_delay_ms=30, max_queue=100, flush_when_idle=False
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    await batcher.submit(rows(1))
    elapsed = loop.time() - start
    assert fn.sizes == [1]
    assert 0.025 <= elapsed < 1.0
    await batcher.aclose()


async def test_idle_backend_runs_a_lone_request_at_once_and_busy_one_groups() -> None:
    fn = Recorder(delay_s=0.05)
    batcher = MicroBatcher(fn, max_batch_size=64, max_delay_ms=1_000, max_queue=100)
    loop = asyncio.get_running_loop()
    start = loop.time()
    first = asyncio.ensure_future(batcher.submit(rows(1)))
    await asyncio.sleep(0.01)  # first batch is running now
    followers = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(2, 6)]
    await first
    assert loop.time() - start < 0.5, "an idle backend must not wait max_delay_ms"
    await asyncio.sleep(0.06)  # the first batch ended; the followers' batch may still wait
    await asyncio.gather(*followers)
    assert fn.sizes[0] == 1 and sum(fn.sizes) == 5 and len(fn.sizes) <= 3
    await batcher.aclose()


async def test_large_request_is_split_into_max_size_chunks_in_order() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch_size=4, max_delay_ms=1, max_queue=100)
    out = await batcher.submit(rows(*range(10)))
    np.testing.assert_array_equal(out["y"][:, 0], np.arange(10) * 2)
    assert sorted(fn.sizes) == [2, 4, 4]
    await batcher.aclose()


async def test_full_queue_is_rejected_immediately() -> None:
    fn = Recorder(delay_s=0.2)
    batcher = MicroBatcher(
        fn, max_batch_size=2, max_delay_ms=1, max_queue=3, max_inflight_batches=1
    )
    running = asyncio.ensure_future(batcher.submit(rows(1)))
    await asyncio.sleep(0.05)  # the only batch slot is now busy
    waiting = [
        asyncio.ensure_future(batcher.submit(rows(2, 3))),
        asyncio.ensure_future(batcher.submit(rows(4))),
    ]
    await asyncio.sleep(0.01)
    assert batcher.queued_rows == 3
    with pytest.raises(QueueFullError, match="queue is full"):
        await batcher.submit(rows(5))
    await asyncio.gather(running, *waiting)
    await batcher.aclose()


async def test_expired_request_is_not_run() -> None:
    fn = Recorder()
    hooks_sizes: list[int] = []
    batcher = MicroBatcher(
        fn,
        max_batch_size=8,
        max_delay_ms=40,
        max_queue=100,
        flush_when_idle=False,
        hooks=BatcherHooks(on_batch=hooks_sizes.append),
    )
    loop = asyncio.get_running_loop()
    expired = batcher.submit(rows(1), deadline=loop.time() + 0.005)
    alive = batcher.submit(rows(2), deadline=loop.time() + 5)
    results = await asyncio.gather(expired, alive, return_exceptions=True)
    assert isinstance(results[0], DeadlineExceededError)
    assert isinstance(results[1], dict)
    assert fn.sizes == [1] and hooks_sizes == [1]
    await batcher.aclose()


async def test_failed_batch_fails_only_its_own_requests() -> None:
    fn = Recorder(fail_on=99)
    batcher = MicroBatcher(fn, max_batch_size=2, max_delay_ms=20, max_queue=100)
    results = await asyncio.gather(
        batcher.submit(rows(99)),
        batcher.submit(rows(1)),  # batch 1: fails
        batcher.submit(rows(2)),
        batcher.submit(rows(3)),  # batch 2: fine
        return_exceptions=True,
    )
    assert isinstance(results[0], BackendError) and isinstance(results[1], BackendError)
    assert results[2]["y"][0, 0] == 4 and results[3]["y"][0, 0] == 6
    # The batcher keeps serving after a failure.
    assert (await batcher.submit(rows(5)))["y"][0, 0] == 10
    await batcher.aclose()


async def test_wrong_output_rows_are_a_backend_error() -> None:
    async def bad(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": np.zeros((1, 1))}

    batcher = MicroBatcher(bad, max_batch_size=4, max_delay_ms=20, max_queue=10)
    with pytest.raises(BackendError, match="for a batch of 2"):
        await asyncio.gather(batcher.submit(rows(1)), batcher.submit(rows(2)))
    await batcher.aclose()


async def test_cancelled_request_is_dropped_from_its_batch() -> None:
    fn = Recorder()
    batcher = MicroBatcher(
        fn, max_batch_size=8, max_delay_ms=50, max_queue=100, flush_when_idle=False
    )
    doomed = asyncio.ensure_future(batcher.submit(rows(7)))
    kept = asyncio.ensure_future(batcher.submit(rows(8)))
    await asyncio.sleep(0.005)
    doomed.cancel()
    out = await kept
    assert out["y"][0, 0] == 16 and fn.sizes == [1]
    await batcher.aclose()


async def test_queue_depth_is_reported() -> None:
    depths: list[int] = []
    batcher = MicroBatcher(
        Recorder(),
        max_batch_size=8,
        max_delay_ms=10,
        max_queue=100,
        hooks=BatcherHooks(on_queue_depth=depths.append),
    )
    await asyncio.gather(batcher.submit(rows(1, 2)), batcher.submit(rows(3)))
    assert max(depths) == 3 and depths[-1] == 0
    await batcher.aclose()


async def test_mismatched_leading_dims_are_invalid() -> None:
    batcher = MicroBatcher(Recorder(), max_batch_size=8, max_delay_ms=1, max_queue=10)
    with pytest.raises(InvalidArgumentError):
        await batcher.submit({"x": np.zeros((2, 1)), "z": np.zeros((3, 1))})
    await batcher.aclose()


async def test_closed_batcher_fails_queued_and_new_requests() -> None:
    batcher = MicroBatcher(
        Recorder(), max_batch_size=8, max_delay_ms=5_000, max_queue=10, flush_when_idle=False
    )
    queued = asyncio.ensure_future(batcher.submit(rows(1)))
    await asyncio.sleep(0.01)
    await batcher.aclose()
    with pytest.raises(UnavailableError):
        await queued
    with pytest.raises(UnavailableError):
        await batcher.submit(rows(2))


# The contracts below are checked by ordering and events, never by elapsed time:
# `NEVER_MS` is a flush delay no test outlives, so a batch that waited for it
# would hang, and `HANG_GUARD_S` only turns such a hang into a failure.
NEVER_MS = 3_600_000.0
HANG_GUARD_S = 30.0


class Gate:
    """A backend that records each batch and holds it until released."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.sizes: list[int] = []
        self.deadlines: list[float | None] = []

    async def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.sizes.append(len(inputs["x"]))
        self.deadlines.append(batch_deadline.get())
        self.started.set()
        await self.release.wait()
        return {"y": inputs["x"] * 2}


@pytest.mark.parametrize("split", [(4,), (1, 3), (2, 2), (1, 1, 1, 1)])
async def test_a_full_batch_leaves_without_waiting_for_max_delay(split: tuple[int, ...]) -> None:
    fn = Recorder()
    batcher = MicroBatcher(
        fn, max_batch_size=4, max_delay_ms=NEVER_MS, max_queue=100, flush_when_idle=False
    )
    requests = [batcher.submit(rows(*range(n))) for n in split]
    await asyncio.wait_for(asyncio.gather(*requests), HANG_GUARD_S)
    assert fn.sizes == [4]
    await batcher.aclose()


async def test_a_batch_that_cannot_take_the_next_request_leaves_at_once() -> None:
    fn = Recorder()
    batcher = MicroBatcher(
        fn, max_batch_size=4, max_delay_ms=NEVER_MS, max_queue=100, flush_when_idle=False
    )
    first = asyncio.ensure_future(batcher.submit(rows(1, 2, 3)))
    second = asyncio.ensure_future(batcher.submit(rows(4, 5)))  # 3 + 2 > 4
    await asyncio.wait_for(first, HANG_GUARD_S)
    assert fn.sizes[0] == 3
    await batcher.aclose()
    with pytest.raises(UnavailableError):  # alone, it would wait for max_delay
        await second


async def test_a_partial_batch_waits_while_another_batch_runs() -> None:
    gate = Gate()
    batcher = MicroBatcher(gate, max_batch_size=4, max_delay_ms=NEVER_MS, max_queue=100)
    running = asyncio.ensure_future(batcher.submit(rows(1)))  # idle backend: leaves at once
    await asyncio.wait_for(gate.started.wait(), HANG_GUARD_S)
    waiting = asyncio.ensure_future(batcher.submit(rows(2)))
    for _ in range(20):
        await asyncio.sleep(0)
    assert gate.sizes == [1] and not waiting.done()
    gate.release.set()
    await asyncio.wait_for(running, HANG_GUARD_S)
    await batcher.aclose()
    with pytest.raises(UnavailableError):
        await waiting


async def test_aclose_waits_for_running_batches() -> None:
    gate = Gate()
    batcher = MicroBatcher(gate, max_batch_size=4, max_delay_ms=NEVER_MS, max_queue=100)
    request = asyncio.ensure_future(batcher.submit(rows(1, 2)))
    await asyncio.wait_for(gate.started.wait(), HANG_GUARD_S)
    closing = asyncio.ensure_future(batcher.aclose())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not closing.done() and not request.done()
    gate.release.set()
    await asyncio.wait_for(closing, HANG_GUARD_S)
    assert request.done()  # finished before aclose returned, with its rows
    np.testing.assert_array_equal(request.result()["y"][:, 0], [2, 4])


async def test_the_batch_deadline_reaches_the_backend() -> None:
    gate = Gate()
    gate.release.set()
    batcher = MicroBatcher(
        gate, max_batch_size=3, max_delay_ms=NEVER_MS, max_queue=100, flush_when_idle=False
    )
    now = asyncio.get_running_loop().time()
    await asyncio.wait_for(
        asyncio.gather(
            batcher.submit(rows(1), deadline=now + 100.0),
            batcher.submit(rows(2), deadline=now + 300.0),
            batcher.submit(rows(3), deadline=now + 200.0),
        ),
        HANG_GUARD_S,
    )
    # One batch, and the backend sees its latest deadline (its rows may run until then).
    assert gate.sizes == [3] and gate.deadlines == [now + 300.0]
    await asyncio.wait_for(
        asyncio.gather(
            batcher.submit(rows(4), deadline=now + 100.0),
            batcher.submit(rows(5)),
            batcher.submit(rows(6), deadline=now + 50.0),
        ),
        HANG_GUARD_S,
    )
    assert gate.sizes == [3, 3] and gate.deadlines[1] is None  # a request without one
    assert batch_deadline.get() is None  # the caller's context is untouched
    await batcher.aclose()


async def test_zero_row_requests_are_refused() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch_size=4, max_delay_ms=1, max_queue=10)
    with pytest.raises(InvalidArgumentError, match="at least one row"):
        await batcher.submit({"x": np.zeros((0, 1), dtype=np.float32)})
    with pytest.raises(InvalidArgumentError, match="leading"):
        await batcher.submit({"x": np.float32(1.0)})
    assert fn.sizes == [] and batcher.queued_rows == 0
    await batcher.aclose()


@pytest.mark.parametrize(
    "settings",
    [
        {"max_batch_size": 0, "max_queue": 10, "max_inflight_batches": 1},
        {"max_batch_size": 4, "max_queue": 0, "max_inflight_batches": 1},
        {"max_batch_size": 4, "max_queue": 10, "max_inflight_batches": 0},
    ],
)
def test_settings_below_one_are_refused(settings: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        MicroBatcher(Recorder(), max_delay_ms=1, **settings)


def test_settings_of_one_are_accepted() -> None:
    batcher = MicroBatcher(
        Recorder(), max_batch_size=1, max_delay_ms=1, max_queue=1, max_inflight_batches=1
    )
    assert batcher.max_batch_size == 1 and batcher.queued_rows == 0


async def test_max_inflight_batches_bounds_concurrent_backend_calls() -> None:
    gate = Gate()
    batcher = MicroBatcher(
        gate, max_batch_size=1, max_delay_ms=NEVER_MS, max_queue=10, max_inflight_batches=2
    )
    requests = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(3)]
    for _ in range(50):
        await asyncio.sleep(0)
    assert gate.sizes == [1, 1]  # the third waits for a slot
    gate.release.set()
    await asyncio.wait_for(asyncio.gather(*requests), HANG_GUARD_S)
    assert gate.sizes == [1, 1, 1]
    await batcher.aclose()


async def test_one_dimensional_outputs_are_split_by_row() -> None:
    async def per_row(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"score": inputs["x"][:, 0] + 1}

    batcher = MicroBatcher(per_row, max_batch_size=4, max_delay_ms=NEVER_MS, max_queue=10)
    first, second = await asyncio.wait_for(
        asyncio.gather(batcher.submit(rows(1, 2)), batcher.submit(rows(3, 4))), HANG_GUARD_S
    )
    np.testing.assert_array_equal(first["score"], [2, 3])
    np.testing.assert_array_equal(second["score"], [4, 5])
    await batcher.aclose()


async def test_a_scalar_output_is_a_backend_error_naming_its_shape() -> None:
    async def scalar(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": np.float32(1.0)}  # type: ignore[dict-item]

    batcher = MicroBatcher(scalar, max_batch_size=4, max_delay_ms=1, max_queue=10)
    with pytest.raises(BackendError, match=r"'y' with shape \(\) for a batch of 1"):
        await batcher.submit(rows(1))
    await batcher.aclose()


async def test_aclose_leaves_no_queued_rows() -> None:
    gate = Gate()
    batcher = MicroBatcher(
        gate, max_batch_size=2, max_delay_ms=NEVER_MS, max_queue=10, max_inflight_batches=1
    )
    running = asyncio.ensure_future(batcher.submit(rows(1)))
    await asyncio.wait_for(gate.started.wait(), HANG_GUARD_S)
    queued = [asyncio.ensure_future(batcher.submit(rows(i, i))) for i in (2, 3, 4)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert batcher.queued_rows >= 4
    closing = asyncio.ensure_future(batcher.aclose())
    for _ in range(20):
        await asyncio.sleep(0)
    assert batcher.queued_rows == 0
    gate.release.set()
    await asyncio.wait_for(closing, HANG_GUARD_S)
    await running
    results = await asyncio.gather(*queued, return_exceptions=True)
    assert all(isinstance(r, UnavailableError) for r in results)
    assert batcher.queued_rows == 0


async def test_two_batches_run_at_once_by_default() -> None:
    gate = Gate()
    batcher = MicroBatcher(gate, max_batch_size=1, max_delay_ms=NEVER_MS, max_queue=10)
    requests = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(4)]
    for _ in range(50):
        await asyncio.sleep(0)
    assert gate.sizes == [1, 1]
    gate.release.set()
    await asyncio.wait_for(asyncio.gather(*requests), HANG_GUARD_S)
    await batcher.aclose()


async def test_a_request_that_does_not_fit_waits_for_the_next_batch() -> None:
    gate = Gate()
    batcher = MicroBatcher(
        gate, max_batch_size=4, max_delay_ms=NEVER_MS, max_queue=20, max_inflight_batches=1
    )
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    await asyncio.wait_for(gate.started.wait(), HANG_GUARD_S)
    queued = [asyncio.ensure_future(batcher.submit(rows(*range(n)))) for n in (2, 3, 1)]
    for _ in range(20):
        await asyncio.sleep(0)
    gate.release.set()
    await asyncio.wait_for(asyncio.gather(first, *queued), HANG_GUARD_S)
    # 2 + 3 > 4: the 2-row request leaves alone (the 3-row head does not fit), then 3 + 1.
    assert gate.sizes == [1, 2, 4]
    await batcher.aclose()
