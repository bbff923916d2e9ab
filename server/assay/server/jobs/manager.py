"""Runs jobs under a lease, streams their progress, and takes over jobs other replicas left.

A job kind is a `JobKind[SpecT]`, generic over its spec model (a frozen
`JobSpec`): it validates a spec up front (so a bad request fails the Start
call, not the job) and runs the job against a `JobContext` that carries the
typed spec and persists units as they finish. The store keeps the spec as
``spec.model_dump(mode="json")``.

Ownership. Every server process is a replica with its own owner id. A job
runs only on the replica that claimed its lease, and only once that replica
has a free slot (``jobs.max_running``): a job waiting for a slot is PENDING and
unowned, so it holds no lease that would need renewing and any replica with a
free slot may take it. While a run lasts, `LeaseKeeper` renews its lease
every ``jobs.heartbeat_s`` and every write of the run names its owner, so a
replica that lost the lease is fenced off. A replica that dies stops
renewing; after ``jobs.lease_s`` another replica's takeover pass (every
``jobs.takeover_poll_s``, and once at start) claims the job and resumes it
from its stored units: nothing finished is recomputed. A stopping replica
releases its leases so that another takes its jobs over at once.

A claimable job whose kind this server does not know, or whose stored spec no
longer validates, is claimed and marked FAILED with the reason. Ended jobs are
deleted ``jobs.retention_days`` after they last changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from pydantic import ValidationError

from assay.server.errors import (
    AssayError,
    ErrorCode,
    FailedPreconditionError,
    InvalidArgumentError,
    ResourceExhaustedError,
    StoreUnavailableError,
)
from assay.server.jobs.context import JobContext, JobEvent, JobKind, job_event
from assay.server.jobs.leases import Lease, LeaseKeeper, Stop, replica_id
from assay.server.jobs.specs import JobSpec, describe, parse_spec
from assay.server.settings import JobSettings
from assay.server.store.base import LeaseLostError, Store
from assay.server.store.records import JobRecord, JobState

__all__ = ["JobContext", "JobEvent", "JobKind", "JobManager"]

log = logging.getLogger(__name__)

WATCH_POLL_S = 1.0
"""A watcher with no local event for this long reads the job from the store
(it may be running on another replica)."""
DAY_S = 86_400.0


class JobManager:
    """Starts, watches, cancels, deletes and takes over jobs of registered kinds."""

    def __init__(
        self,
        store: Store,
        kinds: Mapping[str, JobKind[Any]],
        settings: JobSettings | None = None,
        *,
        owner: str | None = None,
        pin: Callable[[JobSpec], JobSpec] | None = None,
    ) -> None:
        self.store = store
        self._pin = pin
        """Rewrites a spec before it is stored (uploaded datasets: the version shown now)."""
        self.settings = settings or JobSettings()
        self.owner = owner or replica_id()
        """This replica's id in the store's ``owner`` column."""
        self._kinds = dict(kinds)
        self._slots = asyncio.Semaphore(self.settings.max_running)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        """Jobs this replica runs or waits to run, by id."""
        self._watchers: dict[str, set[asyncio.Queue[JobEvent]]] = {}
        self._leases = LeaseKeeper(
            store,
            self.owner,
            self.settings.lease_s,
            self.settings.heartbeat_s,
            self.ended_elsewhere,
        )
        self._background: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._skipped: set[str] = set()  # jobs logged as not runnable here

    # -- starting and taking over ------------------------------------------

    async def start(self, kind: str, spec: JobSpec | Mapping[str, Any]) -> JobRecord:
        """Validate and create a job; it runs in the background once this replica has a slot.

        Args:
            kind: A registered job kind.
            spec: The kind's spec model, or its fields (validated here).

        Raises:
            InvalidArgumentError: Unknown kind, or fields that do not validate.
            ResourceExhaustedError: ``jobs.max_pending`` jobs are already waiting.
            TypeError: A spec model of another kind (a server bug).
        """
        job_kind = self._kinds.get(kind)
        if job_kind is None:
            raise InvalidArgumentError(f"unknown job kind {kind!r}")
        spec_type = job_kind.spec_type
        if isinstance(spec, JobSpec) and not isinstance(spec, spec_type):
            raise TypeError(f"a {kind} job takes a {spec_type.__name__}, not {type(spec).__name__}")
        fields = spec.model_dump(mode="json") if isinstance(spec, JobSpec) else spec
        typed = parse_spec(spec_type, fields, f"{kind} job spec")  # what a takeover will read
        if self._pin is not None:  # blocks on the filesystem
            typed = await asyncio.to_thread(self._pin, typed)
        total = await asyncio.to_thread(job_kind.prepare, typed)  # may scan a dataset
        limit = self.settings.max_pending
        # With a free slot here the job is created reserved for this replica, so
        # another replica's takeover pass cannot claim it in the moment before ours.
        free = len(self._tasks) < self.settings.max_running
        owner, lease_s = (self.owner, self.settings.lease_s) if free else (None, 0.0)
        try:
            record = await asyncio.to_thread(
                self.store.create, kind, typed.model_dump(mode="json"), total, limit, owner,
                lease_s,
            )  # fmt: skip
        except ResourceExhaustedError as exc:
            raise ResourceExhaustedError(
                f"{limit} jobs are already waiting to run (jobs.max_pending = {limit}); "
                "retry once some have started, or cancel pending jobs you no longer need"
            ) from exc
        self._launch(record.id, typed)
        return record

    async def take_over(self) -> list[str]:
        """Claim jobs no replica holds, as many as this replica has free slots; their ids.

        Jobs that cannot run here (unknown kind, stored spec no longer valid)
        are claimed and failed with the reason.
        """
        free = self.settings.max_running - len(self._tasks)
        if free <= 0:
            return []
        limit = self.settings.max_running + 16  # local waiters and unrunnable jobs included
        candidates = await asyncio.to_thread(self.store.claimable, limit)
        launched = []
        for record in candidates:
            if record.id in self._tasks:
                continue  # started here, waiting for a slot
            spec = await self._stored_spec(record)
            if spec is None:
                continue
            if len(self._tasks) >= self.settings.max_running:
                break
            self._launch(record.id, spec)
            launched.append(record.id)
        return launched

    async def _stored_spec(self, record: JobRecord) -> JobSpec | None:
        """The record's spec, validated; None when it cannot run on this replica.

        During a rolling update a replica of another version may know a kind or
        a spec field this one does not, so such a job is left for it; only one
        that no replica has claimed for ``jobs.unrunnable_after_s`` is failed,
        with the reason.
        """
        job_kind = self._kinds.get(record.kind)
        if job_kind is None:
            await self._unrunnable(record, f"unknown job kind {record.kind!r}")
            return None
        try:
            spec: JobSpec = job_kind.spec_type.model_validate(record.spec)
        except ValidationError as exc:
            await self._unrunnable(
                record,
                f"the stored spec of this {record.kind} job is no longer valid for this server "
                f"version ({describe(exc)}); start the job again",
            )
            return None
        return spec

    async def _unrunnable(self, record: JobRecord, reason: str) -> None:
        waited_s = time.time() - record.updated_at
        if waited_s < self.settings.unrunnable_after_s:
            if record.id not in self._skipped:
                self._skipped.add(record.id)
                log.warning(
                    "job %s cannot run on this replica (%s); left for another", record.id, reason
                )
            return
        await self._fail_unrunnable(record, reason)

    async def _fail_unrunnable(self, record: JobRecord, reason: str) -> None:
        claimed = await asyncio.to_thread(
            self.store.claim, record.id, self.owner, self.settings.lease_s
        )
        if claimed is not None:  # else another replica has it now
            await self._end(record.id, JobState.FAILED, reason, ErrorCode.FAILED_PRECONDITION)

    def _launch(self, job_id: str, spec: JobSpec) -> None:
        if job_id in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(self._run(job_id, spec), name=f"job-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    async def _run(self, job_id: str, spec: JobSpec) -> None:
        async with self._slots:  # beyond max_running, jobs wait as PENDING, unowned
            claimed_at = time.monotonic()
            record = await asyncio.to_thread(
                self.store.claim, job_id, self.owner, self.settings.lease_s
            )
            if record is None:
                return  # cancelled meanwhile, or another replica took it
            log.info(
                "job %s: claimed by %s (attempt %d, %d/%d units stored)",
                job_id, self.owner, record.attempts, record.done, record.total,
            )  # fmt: skip
            task = asyncio.current_task()
            assert task is not None
            lease = self._leases.hold(record, task, claimed_at)
            try:
                self.publish(record)
                await self._execute(record, spec, lease)
            finally:
                self._leases.drop(job_id)
                self._wake.set()  # a slot is free: look for waiting jobs now

    async def _execute(self, record: JobRecord, spec: JobSpec, lease: Lease) -> None:
        job_id = record.id
        try:
            done = await asyncio.to_thread(self.store.unit_keys, job_id)
            context = JobContext(self.store, self, self.owner, record, spec, done)
            result = await self._kinds[record.kind].run(context)
        except asyncio.CancelledError:
            raise  # shutdown (the lease is released), a cancel, or a lost lease
        except LeaseLostError as exc:
            self._lost(job_id, exc)
        except StoreUnavailableError as exc:
            await self._store_down(job_id, exc)
        except AssayError as exc:
            await self._end(job_id, JobState.FAILED, str(exc), exc.code)
        except Exception:
            log.exception("job %s failed", job_id)
            # Like an RPC's INTERNAL: a generic message; the details are in the server log.
            message = f"internal error in job {job_id}; the server log has the details"
            await self._end(job_id, JobState.FAILED, message, ErrorCode.INTERNAL)
        else:
            await self._succeed(record, result)

    async def _store_down(self, job_id: str, exc: StoreUnavailableError) -> None:
        """The store failed under a run: stop here and leave the job live for a takeover.

        An unreachable database says nothing about the job, so it is never failed
        for it; once the store answers, this or another replica claims the job and
        resumes from its stored units.
        """
        log.warning("job %s: the store failed (%s); leaving the job for a takeover", job_id, exc)
        await asyncio.to_thread(self._leases.release_all, [job_id])
        self._wake.set()

    async def _succeed(self, record: JobRecord, result: dict[str, Any]) -> None:
        try:
            # Succeeding means every unit is done, whatever the kind last reported.
            await asyncio.to_thread(
                self.store.progress, record.id, record.total, "done", self.owner
            )
            await asyncio.to_thread(self.store.set_result, record.id, result, self.owner)
        except LeaseLostError as exc:
            self._lost(record.id, exc)
            return
        except StoreUnavailableError as exc:
            await self._store_down(record.id, exc)
            return
        except FailedPreconditionError:
            return  # cancelled while finishing: the cancellation stands
        await self._end(record.id, JobState.SUCCEEDED, None)

    async def _end(
        self, job_id: str, state: JobState, error: str | None, code: ErrorCode | None = None
    ) -> None:
        try:
            record = await asyncio.to_thread(
                self.store.finish, job_id, state, error, code, self.owner
            )
        except LeaseLostError as exc:
            self._lost(job_id, exc)
            return
        except StoreUnavailableError as exc:
            await self._store_down(job_id, exc)
            return
        except FailedPreconditionError:  # ended meanwhile (cancelled through some replica)
            self.ended_elsewhere(await asyncio.to_thread(self.store.get, job_id))
            return
        self.publish(record)

    def ended_elsewhere(self, record: JobRecord) -> None:
        """A job this replica runs was ended from outside the run: say so and tell watchers."""
        if self._leases.reason(record.id) is None:  # not a cancel through this replica
            log.info("job %s: %s through another replica; stopping", record.id, record.state.value)
        self.publish(record)

    def _lost(self, job_id: str, exc: Exception) -> None:
        log.warning(
            "job %s: another replica owns it now (%s); this replica stopped its run "
            "without touching the job",
            job_id,
            exc,
        )

    # -- what callers do with jobs -------------------------------------------

    def running(self) -> list[str]:
        """Ids of the jobs this replica runs or waits to run."""
        return list(self._tasks)

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a live job wherever it runs (finished units stay); an ended job is returned as is.

        The replica running the job stops it now when that is this one, and
        at its next heartbeat otherwise.
        """
        record = await asyncio.to_thread(self.store.get, job_id)
        if record.state.terminal:
            return record
        try:
            record = await asyncio.to_thread(
                self.store.finish, job_id, JobState.CANCELLED, "cancelled by request"
            )
        except FailedPreconditionError:  # it ended meanwhile
            return await asyncio.to_thread(self.store.get, job_id)
        if not self._leases.stop(job_id, Stop.CANCELLED):
            task = self._tasks.get(job_id)  # waiting for a slot here, or not here at all
            if task is not None:
                task.cancel()
        self.publish(record)
        return record

    async def delete(self, job_id: str) -> JobRecord:
        """Delete an ended job with its units and report; returns it as it was.

        Raises:
            NotFoundError: No such job.
            FailedPreconditionError: The job is still live.
        """
        record = await asyncio.to_thread(self.store.get, job_id)
        if not record.state.terminal:
            raise FailedPreconditionError(
                f"job {job_id} is {record.state.value}; cancel it first (CancelJob, "
                "`assay jobs cancel`), then delete it"
            )
        await asyncio.to_thread(self.store.delete, job_id)
        return record

    async def sweep(self) -> int:
        """Delete the jobs that ended more than ``jobs.retention_days`` ago; how many went."""
        days = self.settings.retention_days
        if days <= 0:
            return 0
        removed = await asyncio.to_thread(self.store.purge, time.time() - days * DAY_S)
        if removed:
            log.info("deleted %d jobs that ended more than %g days ago", removed, days)
        return removed

    # -- watching ----------------------------------------------------------

    def publish(
        self,
        record: JobRecord,
        partial: dict[str, Any] | None = None,
        context: JobContext[Any] | None = None,
    ) -> None:
        """Send this state of the job (as a store write returned it) to its local watchers."""
        queues = self._watchers.get(record.id)
        if not queues:
            return
        event = job_event(record, partial or {}, context)
        for queue in queues:
            queue.put_nowait(event)

    async def watch(self, job_id: str) -> AsyncIterator[JobEvent]:
        """Events until the job ends; the first one is its current state.

        Events of a run on this replica arrive as they happen; a job run by
        another replica is read from the store every WATCH_POLL_S.
        """
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._watchers.setdefault(job_id, set()).add(queue)
        try:
            record = await asyncio.to_thread(self.store.get, job_id)
            yield job_event(record, {}, None)
            while not record.state.terminal:
                event = await self._next_event(queue, record)
                if event is None or event.record.updated_at < record.updated_at:
                    continue  # nothing new, or older than what the watcher has seen
                record = event.record
                yield event
        finally:
            self._watchers[job_id].discard(queue)
            if not self._watchers[job_id]:
                del self._watchers[job_id]

    async def _next_event(self, queue: asyncio.Queue[JobEvent], last: JobRecord) -> JobEvent | None:
        try:
            return await asyncio.wait_for(queue.get(), WATCH_POLL_S)
        except TimeoutError:
            fresh = await asyncio.to_thread(self.store.get, last.id)
            return None if fresh == last else job_event(fresh, {}, None)

    # -- lifecycle ---------------------------------------------------------

    async def begin(self) -> None:
        """Take over what is claimable now, then keep doing so (and sweeping) in the background."""
        settings = self.settings
        log.info(
            "jobs: this replica is %s (lease %gs, heartbeat %gs, takeover every %gs)",
            self.owner, settings.lease_s, settings.heartbeat_s, settings.takeover_poll_s,
        )  # fmt: skip
        await self._take_over_once()
        loop = asyncio.get_running_loop()
        self._background.append(loop.create_task(self._take_over_forever(), name="job-takeover"))
        if settings.retention_days > 0:
            self._background.append(loop.create_task(self._sweep_forever(), name="job-retention"))

    async def _take_over_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.takeover_poll_s)
            self._wake.clear()
            await self._take_over_once()

    async def _take_over_once(self) -> None:
        try:
            await self.take_over()
        except Exception as exc:  # the store may be down for a while: the next pass retries
            log.warning("job takeover pass failed: %s", exc)

    async def _sweep_forever(self) -> None:
        period = min(3600.0, max(1.0, self.settings.retention_days * DAY_S / 10))
        while True:
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("job retention sweep failed: %s", exc)
            await asyncio.sleep(period)

    async def aclose(self) -> None:
        """Stop local runs without failing them and release their leases.

        The jobs stay RUNNING (or PENDING); another replica, or this one's next
        start, takes them over at once.
        """
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        held = self._leases.held()
        for job_id in held:
            self._leases.stop(job_id, Stop.SHUTDOWN)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._leases.aclose()
        if held:
            await asyncio.to_thread(self._leases.release_all, held)
            log.info("released the leases of %d running jobs", len(held))
