"""The Store contract for job leases, the pending cap and retention, on both engines.

Two replicas are two store objects on the same database, each with its own
connections, as two server processes would be.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from assay.server.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)
from assay.server.store import JobRecord, JobState, LeaseLostError, Store, open_store
from tests._raw_sql import raw

A, B = "replica-a", "replica-b"


@pytest.fixture
def other(store_url: str, store: Store) -> Iterator[Store]:
    """A second replica on the same database (opened after the first)."""
    with contextlib.closing(open_store(store_url)) as opened:
        yield opened


def claimed(store: Store, job_id: str, owner: str, lease_s: float) -> JobRecord:
    record = store.claim(job_id, owner, lease_s)
    assert record is not None, f"{owner} could not claim {job_id}"
    return record


def expire(store_url: str, job_id: str) -> None:
    """Moves the job's lease into the past, as if its owner had stopped renewing long ago."""
    raw(store_url, "UPDATE jobs SET lease_until = lease_until - 3600 WHERE id = ?", (job_id,))


def test_claim_takes_the_lease_and_counts_the_attempt(store: Store) -> None:
    job = store.create("k", {}, 2)
    assert (job.owner, job.lease_until) == (None, None)
    assert [j.id for j in store.claimable()] == [job.id]
    record = claimed(store, job.id, A, 30.0)
    assert (record.state, record.owner, record.attempts) == (JobState.RUNNING, A, 1)
    assert record.lease_until is not None
    assert record.lease_until == pytest.approx(record.updated_at + 30.0)
    assert store.claimable() == []
    again = claimed(store, job.id, A, 30.0)  # Its own lease: a restart of the same replica.
    assert again.attempts == 2


def test_a_live_lease_is_never_taken_over(store: Store, other: Store) -> None:
    job = store.create("k", {}, 1)
    claimed(store, job.id, A, 30.0)
    assert other.claim(job.id, B, 30.0) is None
    assert other.get(job.id).owner == A
    assert other.claimable() == []


def test_an_expired_lease_is_claimable_and_fences_the_old_owner(
    store: Store, other: Store, store_url: str
) -> None:
    job = store.create("k", {}, 3)
    claimed(store, job.id, A, 30.0)
    store.put_unit(job.id, "u0", {"by": A}, {"x": np.arange(2)}, owner=A)
    expire(store_url, job.id)
    assert [j.id for j in other.claimable()] == [job.id]
    taken = claimed(other, job.id, B, 30.0)
    assert (taken.owner, taken.attempts, taken.done) == (B, 2, 1)  # Finished units stay.

    stale_writes: list[Callable[[], object]] = [
        lambda: store.renew(job.id, A, 30.0),
        lambda: store.progress(job.id, 2, "late", owner=A),
        lambda: store.put_unit(job.id, "u1", {"by": A}, {}, owner=A),
        lambda: store.set_result(job.id, {"by": A}, owner=A),
        lambda: store.finish(job.id, JobState.SUCCEEDED, owner=A),
    ]
    for write in stale_writes:
        with pytest.raises(LeaseLostError, match=f"replica '{B}' holds its lease"):
            write()
    assert isinstance(LeaseLostError("x"), FailedPreconditionError)
    after = other.get(job.id)
    assert (after.owner, after.done, after.stage, after.state) == (B, 1, "", JobState.RUNNING)
    assert other.unit_keys(job.id) == {"u0"} and other.result(job.id) is None
    other.put_unit(job.id, "u1", {"by": B}, {}, owner=B)
    other.set_result(job.id, {"by": B}, owner=B)
    done = other.finish(job.id, JobState.SUCCEEDED, owner=B)
    assert (done.state, done.owner, done.lease_until, done.done) == (
        JobState.SUCCEEDED,
        None,
        None,
        2,
    )


def test_renew_extends_the_lease_on_the_store_clock(store: Store) -> None:
    job = store.create("k", {}, 1)
    first = claimed(store, job.id, A, 5.0)
    renewed = store.renew(job.id, A, 60.0)
    assert renewed.owner == A and renewed.lease_until is not None
    assert first.lease_until is not None and renewed.lease_until > first.lease_until + 50
    with pytest.raises(LeaseLostError, match="no longer run by 'replica-b'"):
        store.renew(job.id, B, 60.0)
    with pytest.raises(NotFoundError):
        store.renew("0" * 32, A, 60.0)
    with pytest.raises(InvalidArgumentError, match="lease_s"):
        store.renew(job.id, A, -1.0)
    with pytest.raises(InvalidArgumentError, match="owner"):
        store.claim(job.id, "", 1.0)


def test_release_frees_the_job_at_once_for_another_replica(store: Store, other: Store) -> None:
    job = store.create("k", {}, 1)
    claimed(store, job.id, A, 300.0)
    other.release(job.id, B)  # Not B's lease: nothing changes.
    assert store.get(job.id).owner == A
    store.release(job.id, A)
    released = store.get(job.id)
    assert (released.state, released.owner, released.lease_until) == (
        JobState.RUNNING,
        None,
        None,
    )
    assert [j.id for j in other.claimable()] == [job.id]
    assert claimed(other, job.id, B, 30.0).attempts == 2
    with pytest.raises(LeaseLostError):
        store.renew(job.id, A, 30.0)


def test_a_cancel_from_another_replica_reaches_the_owner_through_renew(
    store: Store, other: Store
) -> None:
    job = store.create("k", {}, 2)
    claimed(store, job.id, A, 30.0)
    cancelled = other.finish(job.id, JobState.CANCELLED, "cancelled by request")  # owner=None
    assert (cancelled.state, cancelled.owner) == (JobState.CANCELLED, None)
    seen = store.renew(job.id, A, 30.0)
    assert (seen.state, seen.error) == (JobState.CANCELLED, "cancelled by request")
    with pytest.raises(FailedPreconditionError, match="is cancelled"):
        store.put_unit(job.id, "late", {}, {}, owner=A)
    assert store.claim(job.id, A, 30.0) is None and other.claim(job.id, B, 30.0) is None
    assert store.claimable() == []


def test_claimable_is_oldest_first_and_skips_ended_and_held_jobs(
    store: Store, store_url: str
) -> None:
    jobs = [store.create("k", {"n": n}, 1) for n in range(5)]
    claimed(store, jobs[1].id, A, 300.0)  # Held.
    claimed(store, jobs[2].id, A, 300.0)
    expire(store_url, jobs[2].id)  # Expired: claimable again.
    store.finish(jobs[3].id, JobState.FAILED, "boom")  # Ended.
    assert [j.id for j in store.claimable()] == [jobs[0].id, jobs[2].id, jobs[4].id]
    assert [j.id for j in store.claimable(limit=1)] == [jobs[0].id]
    with pytest.raises(InvalidArgumentError):
        store.claimable(limit=0)


def test_pending_cap_refuses_the_job_over_it(store: Store) -> None:
    first, second = (store.create("k", {}, 1, max_pending=2) for _ in range(2))
    with pytest.raises(ResourceExhaustedError, match="2 jobs are already waiting"):
        store.create("k", {}, 1, max_pending=2)
    assert store.count([JobState.PENDING]) == 2
    claimed(store, first.id, A, 30.0)  # Running jobs do not count against the cap.
    third = store.create("k", {}, 1, max_pending=2)
    assert store.count([JobState.PENDING]) == 2 and third.state is JobState.PENDING
    store.create("k", {}, 1)  # No cap given: none applied.
    assert store.count([JobState.PENDING, JobState.RUNNING]) == 4
    assert store.count([]) == 0
    assert second.id != third.id


def test_pending_cap_holds_under_concurrent_creates(store: Store, other: Store) -> None:
    cap, per_thread = 7, 10
    made: list[str] = []
    refused: list[Exception] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(2)

    def creator(replica: Store) -> None:
        gate.wait(timeout=30)
        for _ in range(per_thread):
            try:
                made.append(replica.create("k", {}, 1, max_pending=cap).id)
            except ResourceExhaustedError as exc:
                refused.append(exc)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=creator, args=(s,)) for s in (store, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(made) == cap and len(refused) == 2 * per_thread - cap
    assert store.count([JobState.PENDING]) == cap


def test_purge_deletes_ended_jobs_before_the_cutoff_with_their_units(
    store: Store, store_url: str
) -> None:
    old_done, old_live, new_done = (store.create("k", {}, 1) for _ in range(3))
    store.put_unit(old_done.id, "u", {}, {"x": np.ones(3)})
    store.set_result(old_done.id, {"ok": True})
    store.finish(old_done.id, JobState.SUCCEEDED)
    store.finish(new_done.id, JobState.CANCELLED, "stop")
    cutoff = store.get(new_done.id).updated_at
    raw(store_url, "UPDATE jobs SET updated_at = updated_at - 86400 WHERE id <> ?", (new_done.id,))
    assert store.purge(cutoff) == 1  # old_live is old but live; new_done is not old enough.
    with pytest.raises(NotFoundError):
        store.get(old_done.id)
    assert {j.id for j in store.list()} == {old_live.id, new_done.id}
    assert raw(store_url, "SELECT COUNT(*) FROM units") == [(0,)]
    assert raw(store_url, "SELECT COUNT(*) FROM results") == [(0,)]
    assert store.purge(cutoff) == 0
