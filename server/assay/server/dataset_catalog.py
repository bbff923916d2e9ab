"""Uploaded datasets as a service: uploads, listing, deletion, the audit log.

The files under the uploads root are the truth (`dataset_folders`); the store
holds each dataset's metadata and the audit log of who changed what. The
files change first and the store follows. A commit, once begun, runs to its
end even when the upload call is cancelled (the client went away): the link
switch and the record are one task the call only waits for, and the record
is retried while the store is briefly unreachable. A visible dataset whose
record is missing (the store stayed down, or the process died between the
switch and the record) is listed from its files, and recorded from disk at
start and by the periodic tidy-up. So a dataset that became visible is listed,
and its upload is never logged as "failed". Every blocking call (filesystem,
store) runs in a worker thread.

Versions. Jobs pin the version they start on (`dataset_pins`). A superseded
version stays while a live (pending or running) job names it, and for
``settle_s`` after the switch (a Start elsewhere may have pinned it and not
stored its job yet: ``settle_s`` bounds that window); the next prune after
that removes it: ``settle_s`` after each commit (every dataset), at start,
and every ``sweep_s``.

A dataset named by a live job (by its link or a pinned version) is not
deleted: FAILED_PRECONDITION, because the job would fail midway on missing
files. Replacing it is allowed: such jobs keep reading the version they pinned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from assay.server.dataset_folders import SweepReport, UploadsFolder
from assay.server.dataset_pins import DatasetPins
from assay.server.errors import FailedPreconditionError, NotFoundError, UnavailableError
from assay.server.jobs.specs import JobSpec
from assay.server.store.base import Store
from assay.server.store.records import DatasetRecord, JobState, UploadEvent
from assay.server.uploads import DatasetUpload, check_name

log = logging.getLogger(__name__)

LIVE = (JobState.PENDING, JobState.RUNNING)
MAX_LIVE_JOBS = 10_000
"""Live jobs looked at when deciding whether a dataset is in use; with more, nothing is pruned."""
SETTLE_S = 5.0
"""Superseded versions are kept this long after the switch (see the module docstring)."""
SWEEP_S = 60.0
"""How often versions no live job names any more are removed and missing records written."""
RECORD_TRIES = 4
RECORD_RETRY_S = 0.5
"""First wait before retrying a record the store refused as unavailable (doubles each time)."""
UNRECORDED = "server"
"""``uploaded_by`` of a dataset recorded (or listed) from its files."""


class UploadedDatasets:
    """The uploads root and its records in the store."""

    def __init__(
        self,
        root: Path,
        store: Store,
        max_bytes: int,
        *,
        settle_s: float = SETTLE_S,
        sweep_s: float = SWEEP_S,
    ) -> None:
        self.folder = UploadsFolder(root)
        self.pins = DatasetPins(self.folder)
        self.store = store
        self.max_bytes = max_bytes
        self.settle_s = settle_s
        self.sweep_s = sweep_s
        self._commits: dict[DatasetUpload, asyncio.Task[DatasetRecord]] = {}
        self._committing: Counter[str] = Counter()
        """Names this process is switching and recording (the tidy-up leaves them alone)."""
        self._background: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()

    async def start(self) -> SweepReport:
        """Sweep what crashed uploads left, bring the records in line, tidy up periodically."""
        keep = await asyncio.to_thread(self._in_use)
        report = await asyncio.to_thread(self.folder.sweep, keep, self.settle_s)
        recorded = await asyncio.to_thread(self._reconcile, 0.0)
        if report != SweepReport() or recorded:
            log.info("uploads swept at start: %s; %d records rewritten", report, recorded)
        self._spawn(self._tidy_every())
        return report

    def pin(self, spec: JobSpec) -> JobSpec:
        """``spec`` naming the versions its uploaded datasets show now (`DatasetPins.pin`)."""
        return self.pins.pin(spec)

    async def begin(self, name: str, replace: bool) -> DatasetUpload:
        """A new upload into ``name``, staged.

        Raises:
            InvalidArgumentError: The name is not a valid folder name.
            FailedPreconditionError: The name is taken and ``replace`` is False.
        """
        check_name(name)
        if not replace and await asyncio.to_thread(self.folder.exists, name):
            raise FailedPreconditionError(
                f"dataset {name!r} already exists; set replace to overwrite it"
            )
        staged = await asyncio.to_thread(self.folder.stage)
        return DatasetUpload(self.folder, name, replace, staged, self.max_bytes)

    async def commit(self, upload: DatasetUpload, actor: str) -> DatasetRecord:
        """Publish the upload and record it with its audit entry; runs to its end if cancelled."""
        task = asyncio.get_running_loop().create_task(self._commit(upload, actor))
        self._commits[upload] = task
        task.add_done_callback(lambda _: self._commits.pop(upload, None))
        return await asyncio.shield(task)

    async def _commit(self, upload: DatasetUpload, actor: str) -> DatasetRecord:
        self._committing[upload.name] += 1
        try:
            done = await upload.commit()
            record = DatasetRecord(
                upload.name, done.version, done.files, done.bytes, time.time(), actor
            )
            action = "created" if done.previous is None else "replaced"
            event = UploadEvent(record.name, record.version, action, record.files, record.bytes,
                                record.created_at, actor)  # fmt: skip
            await self._record(record, event)
        finally:
            self._committing[upload.name] -= 1
            if self._committing[upload.name] <= 0:
                del self._committing[upload.name]
        self._spawn(self._prune_after_settling())
        return record

    async def _record(self, record: DatasetRecord, event: UploadEvent) -> None:
        """Write a published upload's record; on failure it is listed from disk meanwhile."""
        for attempt in range(RECORD_TRIES):
            try:
                await asyncio.to_thread(self.store.put_dataset, record, event)
                return
            except UnavailableError:
                if attempt + 1 < RECORD_TRIES:
                    await asyncio.sleep(RECORD_RETRY_S * 2**attempt)
            except Exception:
                break
        log.error(
            "dataset %r is visible (version %s) but its record could not be written; it is "
            "listed from its files and recorded by the next tidy-up or start",
            record.name, record.version, exc_info=True,
        )  # fmt: skip

    async def fail(self, name: str, upload: DatasetUpload | None, actor: str, reason: str) -> None:
        """Discard a failed upload's files and log why it failed.

        An upload whose commit has begun is waited for first: if it became
        visible, it was not a failure (its commit records it), whatever ended
        the call.
        """
        if upload is not None:
            commit = self._commits.get(upload)
            if commit is not None:
                await asyncio.wait({commit})
            if upload.published:
                log.info("upload of %r ended with %s after it was published", name, reason)
                return
            await upload.discard()
        version = upload.version if upload is not None else ""
        size = upload.bytes if upload is not None else 0
        event = UploadEvent(
            name[:128], version, "failed", 0, size, time.time(), actor, reason[:500]
        )
        try:
            await asyncio.shield(asyncio.to_thread(self.store.log_upload, event))
        except Exception:  # the upload's own error matters more than its audit entry
            log.exception("could not log the failed upload of %r", name)

    async def all(self) -> list[DatasetRecord]:
        """Every dataset visible on disk, by name: its record, or one read from its files."""
        return await asyncio.to_thread(self._list)

    def _list(self) -> list[DatasetRecord]:
        records = {r.name: r for r in self.store.datasets()}
        listed = []
        for name in self.folder.names():
            version = self.folder.current(name)
            if version is None:
                continue  # not a dataset of ours (yet): a plain folder is adopted at start
            record = records.get(name)
            if record is None or record.version != version:
                record = self._from_disk(name, version)
            listed.append(record)
        return listed

    def _from_disk(self, name: str, version: str) -> DatasetRecord:
        files, size = _count(self.folder.path(name))
        created = self.folder.switched_at(name) or time.time()
        return DatasetRecord(name, version, files, size, created, UNRECORDED)

    async def delete(self, name: str, actor: str) -> DatasetRecord:
        """Delete a dataset (files at once, then its record); returns its last record.

        Raises:
            NotFoundError: There is no such dataset.
            FailedPreconditionError: A pending or running job names it.
        """
        check_name(name)
        if not await asyncio.to_thread(self.folder.exists, name):
            raise NotFoundError(f"dataset {name!r} does not exist")
        record = await asyncio.to_thread(self.store.dataset, name)
        if record is None:  # on disk but never recorded (the next start would record it)
            record = DatasetRecord(name, self.folder.current(name) or "", 0, 0, 0.0, "")
        users = await asyncio.to_thread(self._jobs_using, name)
        if users:
            raise FailedPreconditionError(
                f"dataset {name!r} is used by live job(s) {', '.join(users[:5])}; "
                "cancel them or wait for them to end"
            )
        await asyncio.to_thread(self.folder.remove, name)
        event = UploadEvent(name, record.version, "deleted", 0, 0, time.time(), actor)
        await asyncio.to_thread(self.store.delete_dataset, name, event)
        return record

    def _jobs_using(self, name: str) -> list[str]:
        live = self.store.list(states=LIVE, limit=MAX_LIVE_JOBS)
        return [job.id for job in live if self.pins.names(job.spec, name)]

    # -- tidying up ------------------------------------------------------------

    def _in_use(self) -> dict[str, set[str]] | None:
        """Versions live jobs pin, by name; None when there are too many jobs to tell."""
        live = self.store.list(states=LIVE, limit=MAX_LIVE_JOBS)
        if len(live) >= MAX_LIVE_JOBS:
            log.warning("%d or more live jobs: old dataset versions are kept", MAX_LIVE_JOBS)
            return None
        return self.pins.versions_in_use(job.spec for job in live)

    def _prune(self) -> int:
        keep = self._in_use()
        return 0 if keep is None else self.folder.prune_all(keep, self.settle_s)

    def tidy(self) -> None:
        """Prune unused old versions, then record visible datasets that lack a record (blocks)."""
        pruned = self._prune()
        recorded = self._reconcile(self.settle_s)
        if pruned or recorded:
            log.info(
                "uploads tidied: %d old versions removed, %d records written", pruned, recorded
            )

    def _reconcile(self, young_s: float) -> int:
        """Record visible datasets whose record is missing or stale; how many.

        Links younger than ``young_s`` are left alone: the replica that made
        one may be writing its record right now.
        """
        records = {r.name: r for r in self.store.datasets()}
        recorded = 0
        for name in self.folder.names():
            version = self.folder.current(name)
            record = records.get(name)
            if version is None or name in self._committing:
                continue
            if record is not None and record.version == version:
                continue
            switched = self.folder.switched_at(name) or 0.0
            if time.time() - switched < young_s:
                continue
            found = self._from_disk(name, version)
            action = "created" if record is None else "replaced"
            self.store.put_dataset(
                found,
                UploadEvent(name, version, action, found.files, found.bytes, found.created_at,
                            UNRECORDED, "recorded from disk: found without a matching record"),
            )  # fmt: skip
            recorded += 1
        return recorded

    async def _prune_after_settling(self) -> None:
        if self.settle_s > 0 and not await self._pause(self.settle_s + 1.0):  # + mtime slack
            return  # closing: the next start prunes
        try:
            await asyncio.to_thread(self._prune)
        except Exception:
            log.warning("removing old dataset versions failed", exc_info=True)

    async def _tidy_every(self) -> None:
        while await self._pause(self.sweep_s):
            try:
                await asyncio.to_thread(self.tidy)
            except Exception:
                log.warning(
                    "tidying the uploads failed; again in %.0fs", self.sweep_s, exc_info=True
                )

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``; False as soon as `aclose` is called."""
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            return True
        return False

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Stop tidying; wait for commits and prunes under way (waiting ones are dropped)."""
        self._closing.set()
        await asyncio.gather(*self._commits.values(), *self._background, return_exceptions=True)


def _count(folder: Path) -> tuple[int, int]:
    files = size = 0
    for path in folder.rglob("*"):
        if path.is_file():
            files += 1
            size += path.stat().st_size
    return files, size
