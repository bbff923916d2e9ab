"""Runs jobs in the background, streams their progress, resumes them after a crash.

A job kind is a `JobKind[SpecT]`, generic over its spec model (a frozen
`JobSpec`): it validates a spec up front (so a bad request fails the Start
call, not the job) and runs the job against a `JobContext` that carries the
typed spec and persists units as they finish. The store keeps the spec as
``spec.model_dump(mode="json")``. Watchers get an event whenever the job's
progress changes. On start the manager resumes every job a crash left PENDING
or RUNNING, validating its stored spec first: one that no longer validates
fails that job (naming the field); a job whose rerun fails is marked FAILED
with its finished units kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol

import numpy as np
from pydantic import ValidationError

from assay.server.errors import (
    AssayError,
    ErrorCode,
    FailedPreconditionError,
    InvalidArgumentError,
)
from assay.server.jobs.specs import JobSpec, SpecT, describe, parse_spec
from assay.server.store.base import Store
from assay.server.store.records import JobRecord, JobState, Unit

log = logging.getLogger(__name__)

_NO_LEASE_S = 0.0
"""Until heartbeats renew leases, a claim holds none: any server may resume a live job."""


@dataclass(frozen=True)
class JobEvent:
    """A progress snapshot for watchers."""

    record: JobRecord
    images_per_s: float
    eta_s: float | None
    partial: dict[str, Any]
    """Meta of the unit finished last (empty when none)."""


class JobContext(Generic[SpecT]):
    """What a running job sees: its typed spec, stored units and progress reporting."""

    def __init__(self, manager: JobManager, record: JobRecord, spec: SpecT) -> None:
        self._manager = manager
        self.record = record
        self.spec = spec
        """The job's spec, validated from what the store keeps."""
        self.started = time.monotonic()
        self.images = 0

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self.record.id

    def units(self) -> dict[str, Unit]:
        """Every stored unit of this job."""
        return self._manager.store.units(self.job_id)

    def done_keys(self) -> set[str]:
        """Units already stored (from this run or an earlier, interrupted one)."""
        return self._manager.store.unit_keys(self.job_id)

    async def put(self, key: str, meta: dict[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        """Persist one finished unit and tell watchers."""
        await asyncio.to_thread(self._manager.store.put_unit, self.job_id, key, meta, dict(arrays))
        self.images += int(meta.get("images", 0))
        self._manager.publish(self.job_id, partial={"unit": key, **meta}, context=self)

    async def progress(self, done: int, total: int, stage: str) -> None:
        """Record progress and tell watchers."""
        self._manager.store.progress(self.job_id, done, stage)
        self._manager.publish(self.job_id, context=self)


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


class JobManager:
    """Starts, watches, cancels and resumes jobs of registered kinds."""

    def __init__(
        self,
        store: Store,
        kinds: Mapping[str, JobKind[Any]],
        max_running: int = 2,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        """This server's id as a job lease owner."""
        self._kinds = dict(kinds)
        self._slots = asyncio.Semaphore(max_running)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._watchers: dict[str, set[asyncio.Queue[JobEvent]]] = {}

    async def start(self, kind: str, spec: JobSpec | Mapping[str, Any]) -> JobRecord:
        """Validate and create a job; it starts running in the background.

        Args:
            kind: A registered job kind.
            spec: The kind's spec model, or its fields (validated here).

        Raises:
            InvalidArgumentError: Unknown kind, or fields that do not validate.
            TypeError: A spec model of another kind (a server bug).
        """
        job_kind = self._kinds.get(kind)
        if job_kind is None:
            raise InvalidArgumentError(f"unknown job kind {kind!r}")
        spec_type = job_kind.spec_type
        if isinstance(spec, JobSpec) and not isinstance(spec, spec_type):
            raise TypeError(f"a {kind} job takes a {spec_type.__name__}, not {type(spec).__name__}")
        fields = spec.model_dump(mode="json") if isinstance(spec, JobSpec) else spec
        typed = parse_spec(spec_type, fields, f"{kind} job spec")  # what a resume will read
        total = job_kind.prepare(typed)
        record = self.store.create(kind, typed.model_dump(mode="json"), total)
        self._launch(record, typed)
        return record

    async def resume_interrupted(self) -> list[str]:
        """Restart every job a crash left live; return their ids.

        A job whose kind is unknown, or whose stored spec no longer validates,
        is marked FAILED with the reason; the others resume.
        """
        resumed = []
        for record in self.store.claimable():
            spec = self._stored_spec(record)
            if spec is None:
                continue
            log.info("resuming job %s (%d/%d units done)", record.id, record.done, record.total)
            self._launch(record, spec)
            resumed.append(record.id)
        return resumed

    def _stored_spec(self, record: JobRecord) -> JobSpec | None:
        """The record's spec, validated; None (and the job FAILED) when it cannot run."""
        job_kind = self._kinds.get(record.kind)
        if job_kind is None:
            self._end(
                record.id,
                JobState.FAILED,
                f"unknown job kind {record.kind!r}",
                ErrorCode.FAILED_PRECONDITION,
            )
            return None
        try:
            spec: JobSpec = job_kind.spec_type.model_validate(record.spec)
        except ValidationError as exc:
            log.warning("job %s: stored spec no longer validates: %s", record.id, exc)
            self._end(
                record.id,
                JobState.FAILED,
                f"the stored spec of this {record.kind} job is no longer valid for this server "
                f"version ({describe(exc)}); start the job again",
                ErrorCode.FAILED_PRECONDITION,
            )
            return None
        return spec

    def _launch(self, record: JobRecord, spec: JobSpec) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run(record, spec), name=f"job-{record.id}"
        )
        self._tasks[record.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(record.id, None))

    async def _run(self, record: JobRecord, spec: JobSpec) -> None:
        async with self._slots:  # beyond max_running, jobs wait as PENDING
            await self._run_now(record, spec)

    async def _run_now(self, record: JobRecord, spec: JobSpec) -> None:
        claimed = self.store.claim(record.id, self.owner, _NO_LEASE_S)
        if claimed is None:
            return  # cancelled while waiting for a slot
        record = claimed
        context = JobContext(self, record, spec)
        try:
            result = await self._kinds[record.kind].run(context)
        except asyncio.CancelledError:
            if self.store.get(record.id).state is JobState.CANCELLED:
                self.publish(record.id)
            raise  # server shutdown: stays RUNNING, resumed at next start
        except AssayError as exc:
            self._end(record.id, JobState.FAILED, str(exc), exc.code)
        except Exception:
            log.exception("job %s failed", record.id)
            # Like an RPC's INTERNAL: a generic message; the details are in the server log.
            message = f"internal error in job {record.id}; the server log has the details"
            self._end(record.id, JobState.FAILED, message, ErrorCode.INTERNAL)
        else:
            try:
                # Succeeding means every unit is done, whatever the kind last reported.
                self.store.progress(record.id, record.total, "done")
                self.store.set_result(record.id, result)
            except FailedPreconditionError:
                return  # cancelled while finishing: the cancellation stands
            self._end(record.id, JobState.SUCCEEDED, None)

    def _end(
        self, job_id: str, state: JobState, error: str | None, code: ErrorCode | None = None
    ) -> None:
        with contextlib.suppress(FailedPreconditionError):  # already ended (cancelled meanwhile)
            self.store.finish(job_id, state, error, code)
        self.publish(job_id)

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a live job (finished units stay); a finished job is returned unchanged."""
        record = self.store.get(job_id)
        if record.state.terminal:
            return record
        self.store.finish(job_id, JobState.CANCELLED, "cancelled by request")
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
        self.publish(job_id)
        return self.store.get(job_id)

    def publish(
        self,
        job_id: str,
        partial: dict[str, Any] | None = None,
        context: JobContext[Any] | None = None,
    ) -> None:
        """Send the job's current state to its watchers."""
        queues = self._watchers.get(job_id)
        if not queues:
            return
        event = self._event(self.store.get(job_id), partial or {}, context)
        for queue in queues:
            queue.put_nowait(event)

    @staticmethod
    def _event(
        record: JobRecord, partial: dict[str, Any], context: JobContext[Any] | None
    ) -> JobEvent:
        rate, eta = 0.0, None
        if context is not None:
            elapsed = max(time.monotonic() - context.started, 1e-6)
            rate = context.images / elapsed
            fresh = record.done - context.record.done
            if fresh > 0 and record.total > record.done:
                eta = elapsed / fresh * (record.total - record.done)
        return JobEvent(record, rate, eta, partial)

    async def watch(self, job_id: str) -> AsyncIterator[JobEvent]:
        """Events until the job ends; the first one is its current state."""
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._watchers.setdefault(job_id, set()).add(queue)
        try:
            record = self.store.get(job_id)
            yield self._event(record, {}, None)
            while not record.state.terminal:
                event = await queue.get()
                record = event.record
                yield event
        finally:
            self._watchers[job_id].discard(queue)

    async def aclose(self) -> None:
        """Stop running jobs without failing them: they resume at the next start."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
