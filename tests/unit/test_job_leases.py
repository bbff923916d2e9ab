"""Job ownership between replicas: two JobManagers (two owner ids) on one real store.

Each test runs on both engines (a SQLite file, a PostgreSQL schema); each
replica opens its own Store on the same URL, as two servers would.

Replica A runs on its own event loop in a thread, so the test can freeze it
the way a hung or dead process looks to the store (its heartbeat stops, it
releases nothing), and thaw it afterwards to check that a stale owner is
fenced off. Replica B runs on the test's loop. Waits poll with deadlines.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import numpy as np
import pytest

from assay.server.errors import (
    FailedPreconditionError,
    NotFoundError,
    ResourceExhaustedError,
    StoreUnavailableError,
)
from assay.server.jobs.manager import JobContext, JobManager
from assay.server.jobs.specs import JobSpec
from assay.server.settings import JobSettings
from assay.server.store import Store, open_store
from assay.server.store.records import JobRecord, JobState

T = TypeVar("T")

LEASE_S = 1.0
FAST = {"lease_s": LEASE_S, "heartbeat_s": 0.2, "takeover_poll_s": 0.1}


class UnitsSpec(JobSpec):
    units: int = 6


class Units:
    """A real job kind: ``units`` units, each computed (and counted), then stored.

    With ``hang_at`` = n, the n-th unit this instance computes never gets
    stored until `gate` is set: the run hangs mid-unit, as a stuck replica does.
    """

    spec_type = UnitsSpec

    def __init__(self, name: str, hang_at: int | None = None) -> None:
        self.name = name
        self.hang_at = hang_at
        self.gate = asyncio.Event()
        self.computed: list[str] = []
        self.cancelled = threading.Event()

    def prepare(self, spec: UnitsSpec) -> int:
        return spec.units

    async def run(self, context: JobContext[UnitsSpec]) -> dict[str, Any]:
        try:
            for i in range(context.spec.units):
                key = f"u{i}"
                if key in context.done_keys():
                    continue
                self.computed.append(key)
                if len(self.computed) == self.hang_at:
                    await self.gate.wait()
                await context.put(key, {"by": self.name, "value": i * i}, {"x": np.arange(i)})
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        stored = await context.units()
        return {"values": {key: unit.meta["value"] for key, unit in stored.items()}}


EXPECTED = {"values": {f"u{i}": i * i for i in range(6)}}


class LoopThread:
    """An event loop on a thread that the test can freeze (a hung replica) and thaw."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = self._spawn()

    def _spawn(self) -> threading.Thread:
        thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="replica-a")
        thread.start()
        return thread

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def call_soon(self, callback: Callable[[], object]) -> None:
        self.loop.call_soon_threadsafe(callback)

    def freeze(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def thaw(self) -> None:
        self._thread = self._spawn()

    def close(self) -> None:
        self.freeze()
        self.loop.close()


async def poll(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout_s: float = 20
) -> T:
    """``read()`` until ``done`` holds for its value; fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"still not there after {timeout_s}s: {value}"
        await asyncio.sleep(0.02)


def settings(**overrides: Any) -> JobSettings:
    return JobSettings(**{**FAST, **overrides})


@pytest.fixture
def replica_a(store_url: str) -> Iterator[tuple[LoopThread, Store]]:
    thread, store = LoopThread(), open_store(store_url)
    try:
        yield thread, store
    finally:
        thread.close()
        store.close()


@pytest.fixture
async def store_b(store_url: str) -> AsyncIterator[Store]:
    store = open_store(store_url)
    try:
        yield store
    finally:
        store.close()


def job(store: Store, job_id: str) -> Callable[[], Awaitable[JobRecord]]:
    return lambda: asyncio.to_thread(store.get, job_id)


async def test_a_held_lease_is_never_taken_and_a_dead_replica_s_job_is_taken_over(
    replica_a: tuple[LoopThread, Store], store_b: Store
) -> None:
    thread, store_a = replica_a
    kind_a, kind_b = Units("a", hang_at=3), Units("b")
    a = JobManager(store_a, {"units": kind_a}, settings(), owner="replica-a")
    b = JobManager(store_b, {"units": kind_b}, settings(), owner="replica-b")
    record = thread.run(a.start("units", {}))
    await b.begin()
    try:
        # A stores two units, then hangs in its third while its heartbeat goes on.
        held = await poll(job(store_b, record.id), lambda r: r.done == 2)
        assert (held.owner, held.state, held.attempts) == ("replica-a", JobState.RUNNING, 1)
        first_lease = held.lease_until or 0.0
        renewed = await poll(
            job(store_b, record.id), lambda r: (r.lease_until or 0) > first_lease + 2 * LEASE_S
        )
        # Two lease periods went by with B polling every 0.1 s: B took nothing.
        assert (renewed.owner, renewed.attempts) == ("replica-a", 1) and kind_b.computed == []

        thread.freeze()  # A hangs for good: no heartbeat, no release
        frozen_at = time.time()
        lease_until = (await asyncio.to_thread(store_b.get, record.id)).lease_until or 0.0
        await poll(job(store_b, record.id), lambda r: r.attempts == 2)
        taken = time.time()
        finished = await poll(job(store_b, record.id), lambda r: r.state.terminal)
    finally:
        await b.aclose()
    assert finished.state is JobState.SUCCEEDED, finished.error
    assert finished.attempts == 2 and finished.done == 6
    assert await asyncio.to_thread(store_b.result, record.id) == EXPECTED
    # A computed u0..u2 (u2 never stored); B computed only what was not stored.
    assert kind_a.computed == ["u0", "u1", "u2"]
    assert kind_b.computed == ["u2", "u3", "u4", "u5"]
    units = await asyncio.to_thread(store_b.units, record.id)
    assert [u.meta["by"] for u in units.values()] == ["a", "a", "b", "b", "b", "b"]
    assert taken >= lease_until, "B took the job over only after A's lease ran out"
    assert taken - frozen_at < LEASE_S + 3.0
    print(f"takeover {taken - frozen_at:.2f}s after the freeze (lease_s {LEASE_S})")

    # A wakes up and finishes its stuck unit: the store refuses the stale owner.
    thread.thaw()
    thread.call_soon(kind_a.gate.set)
    thread.run(poll(lambda: asyncio.sleep(0, a.running()), lambda ids: ids == [], 5.0))
    thread.run(a.aclose())
    after = await asyncio.to_thread(store_b.get, record.id)
    assert (after.state, after.attempts, after.done) == (JobState.SUCCEEDED, 2, 6)
    units = await asyncio.to_thread(store_b.units, record.id)
    assert units["u2"].meta["by"] == "b", "the stale owner's write was fenced off"


async def test_a_stopping_replica_releases_its_jobs_for_an_immediate_takeover(
    replica_a: tuple[LoopThread, Store], store_b: Store
) -> None:
    thread, store_a = replica_a
    slow = settings(lease_s=60.0, heartbeat_s=0.2)  # a takeover must not wait for the lease
    kind_a, kind_b = Units("a", hang_at=2), Units("b")
    a = JobManager(store_a, {"units": kind_a}, slow, owner="replica-a")
    b = JobManager(store_b, {"units": kind_b}, slow, owner="replica-b")
    record = thread.run(a.start("units", {}))
    await poll(job(store_b, record.id), lambda r: r.done == 1)
    thread.run(a.aclose())
    released = await asyncio.to_thread(store_b.get, record.id)
    assert (released.state, released.owner) == (JobState.RUNNING, None), "stays live, unowned"
    started = time.monotonic()
    await b.begin()
    try:
        finished = await poll(job(store_b, record.id), lambda r: r.state.terminal)
    finally:
        await b.aclose()
    assert finished.state is JobState.SUCCEEDED and finished.attempts == 2
    assert time.monotonic() - started < 10, "no wait for the 60 s lease"
    assert kind_b.computed == ["u1", "u2", "u3", "u4", "u5"]


async def test_cancel_through_another_replica_stops_the_owner_within_a_heartbeat(
    replica_a: tuple[LoopThread, Store], store_b: Store
) -> None:
    thread, store_a = replica_a
    kind_a = Units("a", hang_at=2)
    a = JobManager(store_a, {"units": kind_a}, settings(), owner="replica-a")
    b = JobManager(store_b, {"units": Units("b")}, settings(), owner="replica-b")
    record = thread.run(a.start("units", {}))
    await poll(job(store_b, record.id), lambda r: r.done == 1)
    cancelled_at = time.monotonic()
    cancelled = await b.cancel(record.id)
    assert cancelled.state is JobState.CANCELLED and cancelled.owner is None
    await asyncio.to_thread(kind_a.cancelled.wait, 5.0)
    assert kind_a.cancelled.is_set(), "the owner stopped its run"
    assert time.monotonic() - cancelled_at < 2.0  # a 0.2 s heartbeat, with room for a slow box
    thread.run(a.aclose())
    after = await asyncio.to_thread(store_b.get, record.id)
    assert (after.state, after.done, after.error) == (JobState.CANCELLED, 1, "cancelled by request")
    assert await b.cancel(record.id) == after, "cancelling an ended job changes nothing"


async def test_takeover_claims_no_more_than_the_free_slots(store_b: Store) -> None:
    kind = Units("b", hang_at=1)
    b = JobManager(store_b, {"units": kind}, settings(max_running=1), owner="replica-b")
    ids = [(await asyncio.to_thread(store_b.create, "units", {}, 6)).id for _ in range(3)]
    await b.begin()
    try:
        first = await poll(job(store_b, ids[0]), lambda r: r.owner == "replica-b")
        # Two heartbeats (several takeover passes) with no free slot: nothing else is claimed.
        start = first.lease_until or 0.0
        await poll(job(store_b, ids[0]), lambda r: (r.lease_until or 0) > start + 0.4)
        waiting = [await asyncio.to_thread(store_b.get, i) for i in ids[1:]]
        unclaimed = (JobState.PENDING, None, 0)
        assert [(r.state, r.owner, r.attempts) for r in waiting] == [unclaimed, unclaimed]
        kind.gate.set()
        for job_id in ids:  # one after the other, as slots free up
            done = await poll(job(store_b, job_id), lambda r: r.state.terminal)
            assert done.state is JobState.SUCCEEDED and done.attempts == 1
    finally:
        await b.aclose()


async def test_jobs_this_replica_cannot_run_are_left_for_others_then_failed_with_the_reason(
    store_b: Store,
) -> None:
    good = await asyncio.to_thread(store_b.create, "units", {"units": 2}, 2)
    bad = await asyncio.to_thread(store_b.create, "units", {"units": "many"}, 2)
    unknown = await asyncio.to_thread(store_b.create, "retired", {}, 1)
    # A replica of another version (rolling update) leaves them alone at first.
    patient = JobManager(store_b, {}, settings(), owner="replica-old")
    assert await patient.take_over() == []
    for left in (bad, unknown):
        record = await asyncio.to_thread(store_b.get, left.id)
        assert (record.state, record.owner, record.attempts) == (JobState.PENDING, None, 0)
    await patient.aclose()
    # Nobody claimed them for unrunnable_after_s: they fail, saying why.
    b = JobManager(
        store_b, {"units": Units("b")}, settings(unrunnable_after_s=0.0), owner="replica-b"
    )
    try:
        assert await b.take_over() == [good.id]
        failed = await asyncio.to_thread(store_b.get, bad.id)
        assert failed.state is JobState.FAILED and "no longer valid" in (failed.error or "")
        gone = await asyncio.to_thread(store_b.get, unknown.id)
        assert (gone.state, gone.error) == (JobState.FAILED, "unknown job kind 'retired'")
        await poll(job(store_b, good.id), lambda r: r.state is JobState.SUCCEEDED)
    finally:
        await b.aclose()


async def test_pending_cap_delete_and_retention(store_b: Store) -> None:
    kind = Units("b", hang_at=1)
    capped = settings(max_running=1, max_pending=2, retention_days=0.3 / 86_400)
    b = JobManager(store_b, {"units": kind}, capped, owner="replica-b")
    try:
        running = await b.start("units", {})
        await poll(job(store_b, running.id), lambda r: r.state is JobState.RUNNING)
        queued = [await b.start("units", {}) for _ in range(2)]
        with pytest.raises(ResourceExhaustedError, match="2 jobs are already waiting to run"):
            await b.start("units", {})
        with pytest.raises(FailedPreconditionError, match="cancel it first"):
            await b.delete(queued[0].id)
        await b.cancel(queued[0].id)
        deleted = await b.delete(queued[0].id)
        assert deleted.state is JobState.CANCELLED
        with pytest.raises(NotFoundError):
            await asyncio.to_thread(store_b.get, queued[0].id)
        # Retention: the ended job goes once 0.3 s have passed; live ones stay.
        await b.cancel(queued[1].id)
        await poll(b.sweep, lambda removed: removed == 1, timeout_s=5)
        live = await asyncio.to_thread(store_b.list)
        assert [r.id for r in live] == [running.id]
    finally:
        await b.aclose()
    keep = JobManager(store_b, {}, settings(retention_days=0))
    assert await keep.sweep() == 0


class FlakyStore:
    """A real store whose ``put_unit`` fails ``failures`` times as an unreachable database does.

    Only the injected outage is simulated; everything else is the real store.
    """

    def __init__(self, store: Store, failures: int) -> None:
        self._store = store
        self.failures = failures

    def put_unit(self, *args: Any, **kwargs: Any) -> JobRecord:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailableError("the database went away (injected)")
        return self._store.put_unit(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_a_store_outage_under_a_run_leaves_the_job_live_and_it_resumes(
    store_b: Store,
) -> None:
    flaky = FlakyStore(store_b, failures=1)
    kind = Units("b")
    b = JobManager(flaky, {"units": kind}, settings(), owner="replica-b")  # type: ignore[arg-type]
    await b.begin()  # the takeover loop that finds the released job
    try:
        record = await b.start("units", {})
        finished = await poll(job(store_b, record.id), lambda r: r.state.terminal)
    finally:
        await b.aclose()
    assert finished.state is JobState.SUCCEEDED, finished.error  # never FAILED for the outage
    assert finished.attempts == 2 and finished.done == 6  # released, then claimed again
    assert kind.computed == ["u0", "u0", "u1", "u2", "u3", "u4", "u5"]  # u0 had not been stored
    assert await asyncio.to_thread(store_b.result, record.id) == EXPECTED
