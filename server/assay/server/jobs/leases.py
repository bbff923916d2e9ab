"""The heartbeat: a replica renews the lease of every job it runs, and stops runs it lost.

A job is run by the replica holding its lease. `LeaseKeeper` keeps the leases
this replica holds alive with one batched loop (every ``heartbeat_s``, one
worker-thread hop renews them all) and watches what the renewals say:

* the job was CANCELLED (through any replica): the local run is stopped and
  watchers hear of it;
* another replica holds the lease now (`LeaseLostError`), or the job is gone:
  the local run is stopped without touching the job, since its new owner has it;
* renewals fail (the store is unreachable) for longer than ``lease_s``: the
  lease has run out on the store's clock and another replica may have taken
  the job, so the local run is stopped too. The store fences a stale owner's
  writes anyway; stopping early just saves the wasted work.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from assay.server.errors import NotFoundError
from assay.server.store.base import LeaseLostError, Store
from assay.server.store.records import JobRecord

log = logging.getLogger(__name__)


def replica_id() -> str:
    """A fresh owner id for this server process: host, pid and a random suffix.

    The random part keeps ids apart when a pid is reused (a restarted
    container is often pid 1 again on the same host name).
    """
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class Stop(enum.Enum):
    """Why a local run was stopped; decides what the run may still do."""

    SHUTDOWN = "shutdown"
    """This replica is stopping: the lease is released, the job stays live."""
    CANCELLED = "cancelled"
    """The job was cancelled (here or through another replica)."""
    LOST = "lost"
    """Another replica owns the job now: touch nothing."""


@dataclass
class Lease:
    """One job this replica runs, and how long its lease surely lasts."""

    record: JobRecord
    task: asyncio.Task[None]
    valid_until: float
    """time.monotonic() before which the lease is surely still ours."""
    stop: Stop | None = field(default=None)


class LeaseKeeper:
    """Holds this replica's leases and renews them every ``heartbeat_s``."""

    def __init__(
        self,
        store: Store,
        owner: str,
        lease_s: float,
        heartbeat_s: float,
        on_cancelled: Callable[[JobRecord], None],
    ) -> None:
        self._store = store
        self._owner = owner
        self._lease_s = lease_s
        self._heartbeat_s = heartbeat_s
        self._on_cancelled = on_cancelled
        self._held: dict[str, Lease] = {}
        self._loop_task: asyncio.Task[None] | None = None

    def hold(self, record: JobRecord, task: asyncio.Task[None], claimed_at: float) -> Lease:
        """Start renewing a lease just claimed (``claimed_at``: monotonic time before the claim)."""
        lease = Lease(record, task, claimed_at + self._lease_s)
        self._held[record.id] = lease
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(
                self._beat_forever(), name="job-heartbeat"
            )
        return lease

    def drop(self, job_id: str) -> None:
        """Stop renewing (the run ended, or its lease was released)."""
        self._held.pop(job_id, None)

    def held(self) -> list[str]:
        """Ids of the jobs whose lease this replica holds."""
        return list(self._held)

    def stop(self, job_id: str, reason: Stop) -> bool:
        """Stop the local run of a job; False when this replica does not run it."""
        lease = self._held.get(job_id)
        if lease is None:
            return False
        if lease.stop is None:
            lease.stop = reason
        lease.task.cancel()
        return True

    def reason(self, job_id: str) -> Stop | None:
        """Why the job's local run was stopped (None: it was not, or it is not held)."""
        lease = self._held.get(job_id)
        return None if lease is None else lease.stop

    async def _beat_forever(self) -> None:
        while self._held:
            await asyncio.sleep(self._heartbeat_s)
            try:
                await self.beat()
            except Exception:  # never let one bad beat end the heartbeat
                log.exception("job lease heartbeat failed")

    async def beat(self) -> None:
        """Renew every held lease once and act on what the store answers."""
        ids = [job_id for job_id, lease in self._held.items() if lease.stop is None]
        if not ids:
            return
        started = time.monotonic()
        outcomes = await asyncio.to_thread(self._renew_all, ids)
        for job_id, outcome in zip(ids, outcomes, strict=True):
            lease = self._held.get(job_id)
            if lease is None or lease.stop is not None:
                continue  # ended or stopped while renewing
            if isinstance(outcome, JobRecord):
                self._renewed(lease, outcome, started)
            elif isinstance(outcome, LeaseLostError | NotFoundError):
                log.warning(
                    "job %s: lease lost (%s); stopping the local run without touching the job",
                    job_id,
                    outcome,
                )
                self.stop(job_id, Stop.LOST)
            elif time.monotonic() > lease.valid_until:
                log.warning(
                    "job %s: lease not renewed for %.1fs (%s); another replica may own it "
                    "now, stopping the local run",
                    job_id,
                    self._lease_s,
                    outcome,
                )
                self.stop(job_id, Stop.LOST)
            else:
                log.warning("job %s: lease renewal failed, will retry: %s", job_id, outcome)

    def _renewed(self, lease: Lease, record: JobRecord, started: float) -> None:
        lease.valid_until = started + self._lease_s
        if record.state.terminal:
            self._on_cancelled(record)
            self.stop(record.id, Stop.CANCELLED)

    def _renew_all(self, ids: Sequence[str]) -> list[JobRecord | Exception]:
        """One renew per lease, in one thread hop; an error is kept as that lease's outcome."""
        outcomes: list[JobRecord | Exception] = []
        for job_id in ids:
            try:
                outcomes.append(self._store.renew(job_id, self._owner, self._lease_s))
            except Exception as exc:  # reported per lease by beat()
                outcomes.append(exc)
        return outcomes

    def release_all(self, ids: Sequence[str]) -> None:
        """Give the leases up at once (blocking: call it on a worker thread)."""
        for job_id in ids:
            try:
                self._store.release(job_id, self._owner)
            except Exception as exc:  # the lease then simply runs out
                log.warning("job %s: could not release its lease: %s", job_id, exc)

    async def aclose(self) -> None:
        """Stop the heartbeat loop."""
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
