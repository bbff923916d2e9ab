"""What a job kind sees while it runs: its typed spec, its stored units, progress reporting.

A run belongs to the replica holding the job's lease, so every write a
`JobContext` makes names that replica (``owner=``): once another replica has
taken the job over, the store refuses the write with `LeaseLostError` and the
stale run stops instead of overwriting its successor's work. Every store call
runs on a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol

import numpy as np

from assay.server.jobs.specs import SpecT
from assay.server.store.base import Store
from assay.server.store.records import JobRecord, Unit


@dataclass(frozen=True)
class JobEvent:
    """A progress snapshot for watchers."""

    record: JobRecord
    images_per_s: float
    eta_s: float | None
    partial: dict[str, Any]
    """Meta of the unit finished last (empty when none)."""


class Publisher(Protocol):
    """Where a run's progress goes: the manager's watchers."""

    def publish(
        self,
        record: JobRecord,
        partial: dict[str, Any] | None = None,
        context: JobContext[Any] | None = None,
    ) -> None:
        """Send this state of the job to its watchers."""
        ...


class JobContext(Generic[SpecT]):
    """What a running job sees: its typed spec, stored units and progress reporting."""

    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        owner: str,
        record: JobRecord,
        spec: SpecT,
        done_keys: set[str],
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._owner = owner
        self._done = set(done_keys)
        self.record = record
        """The job as this run claimed it."""
        self.spec = spec
        """The job's spec, validated from what the store keeps."""
        self.started = time.monotonic()
        self.images = 0

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self.record.id

    async def units(self) -> dict[str, Unit]:
        """Every stored unit of this job (from this run or an earlier one), read off the loop."""
        return await asyncio.to_thread(self._store.units, self.job_id)

    def done_keys(self) -> set[str]:
        """Units already stored (from this run or an earlier, interrupted one).

        Read from the store once, when the run was claimed, and kept up to date
        by `put`: only this run writes units while it holds the lease.
        """
        return set(self._done)

    async def put(self, key: str, meta: dict[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        """Persist one finished unit and tell watchers.

        Raises:
            LeaseLostError: Another replica took the job over; stop.
        """
        record = await asyncio.to_thread(
            self._store.put_unit, self.job_id, key, meta, dict(arrays), self._owner
        )
        self._done.add(key)
        self.images += int(meta.get("images", 0))
        self._publisher.publish(record, partial={"unit": key, **meta}, context=self)

    async def progress(self, done: int, total: int, stage: str) -> None:
        """Record progress and tell watchers.

        Raises:
            LeaseLostError: Another replica took the job over; stop.
        """
        record = await asyncio.to_thread(
            self._store.progress, self.job_id, done, stage, self._owner
        )
        self._publisher.publish(record, context=self)


class JobKind(Protocol[SpecT]):
    """One kind of job (e.g. robustness suites), generic over its spec model."""

    @property
    def spec_type(self) -> type[SpecT]:
        """The spec model its jobs take."""
        ...

    def prepare(self, spec: SpecT) -> int:
        """Check the spec against the server (models, datasets); the number of units.

        Raises:
            AssayError: The job cannot run (InvalidArgumentError, NotFoundError, ...).
        """
        ...

    async def run(self, context: JobContext[SpecT]) -> dict[str, Any]:
        """Do the work; return the final result (report JSON)."""
        ...


def job_event(
    record: JobRecord, partial: dict[str, Any], context: JobContext[Any] | None
) -> JobEvent:
    """The event watchers get for ``record``; rate and ETA come from the local run, if any."""
    rate, eta = 0.0, None
    if context is not None:
        elapsed = max(time.monotonic() - context.started, 1e-6)
        rate = context.images / elapsed
        fresh = record.done - context.record.done
        if fresh > 0 and record.total > record.done:
            eta = elapsed / fresh * (record.total - record.done)
    return JobEvent(record, rate, eta, partial)
