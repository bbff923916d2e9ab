"""Uploaded datasets as a service: uploads, listing, deletion, the audit log.

The files under the uploads root are the truth (`dataset_folders`); the store
holds each dataset's metadata and the audit log of who changed what. The
files change first and the store follows, so a crash between the two leaves
a record behind the files, which `start` rewrites from disk. Every blocking
call (filesystem, store) runs in a worker thread.

A dataset named by a live (pending or running) job is not deleted:
FAILED_PRECONDITION, because the job would fail midway on missing files.
Replacing it is allowed (that is what replace means); a job already reading
the old version may then fail on files that are gone, as before versions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from assay.server.dataset_folders import SweepReport, UploadsFolder
from assay.server.errors import FailedPreconditionError, NotFoundError
from assay.server.store.base import Store
from assay.server.store.records import DatasetRecord, JobState, UploadEvent
from assay.server.uploads import DatasetUpload, check_name

log = logging.getLogger(__name__)

LIVE = (JobState.PENDING, JobState.RUNNING)
MAX_LIVE_JOBS = 10_000
"""Live jobs looked at when deciding whether a dataset is in use."""


class UploadedDatasets:
    """The uploads root and its records in the store."""

    def __init__(self, root: Path, store: Store, max_bytes: int) -> None:
        self.folder = UploadsFolder(root)
        self.store = store
        self.max_bytes = max_bytes
        self._pruning: set[asyncio.Task[int]] = set()

    async def start(self) -> SweepReport:
        """Sweep what crashed uploads left and bring the records in line with the files."""
        report = await asyncio.to_thread(self.folder.sweep)
        recorded = await asyncio.to_thread(self._reconcile)
        if report != SweepReport() or recorded:
            log.info("uploads swept at start: %s; %d records rewritten", report, recorded)
        return report

    def _reconcile(self) -> int:
        recorded = 0
        for name in self.folder.names():
            version = self.folder.current(name)
            record = self.store.dataset(name)
            if version is None or (record is not None and record.version == version):
                continue
            files, size = _count(self.folder.path(name))
            now = time.time()
            action = "created" if record is None else "replaced"
            self.store.put_dataset(
                DatasetRecord(name, version, files, size, now, "server"),
                UploadEvent(name, version, action, files, size, now, "server",
                            "recorded at start: found on disk without a matching record"),
            )  # fmt: skip
            recorded += 1
        return recorded

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
        """Publish the upload, record it with its audit entry, and prune old versions."""
        done = await upload.commit()
        record = DatasetRecord(
            upload.name, done.version, done.files, done.bytes, time.time(), actor
        )
        action = "created" if done.previous is None else "replaced"
        event = UploadEvent(record.name, record.version, action, record.files, record.bytes,
                            record.created_at, actor)  # fmt: skip
        self._prune_later(upload.name)
        await asyncio.to_thread(self.store.put_dataset, record, event)
        return record

    async def fail(self, name: str, upload: DatasetUpload | None, actor: str, reason: str) -> None:
        """Discard a failed upload's files and log why it failed."""
        if upload is not None:
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
        """Every dataset that exists on disk, by name, with its recorded metadata."""
        return await asyncio.to_thread(self._list)

    def _list(self) -> list[DatasetRecord]:
        return [r for r in self.store.datasets() if self.folder.current(r.name) == r.version]

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
        users = await asyncio.to_thread(self._jobs_using, self.folder.path(name))
        if users:
            raise FailedPreconditionError(
                f"dataset {name!r} is used by live job(s) {', '.join(users[:5])}; "
                "cancel them or wait for them to end"
            )
        await asyncio.to_thread(self.folder.remove, name)
        event = UploadEvent(name, record.version, "deleted", 0, 0, time.time(), actor)
        await asyncio.to_thread(self.store.delete_dataset, name, event)
        return record

    def _jobs_using(self, path: Path) -> list[str]:
        target = os.path.normpath(path)
        return [
            job.id
            for job in self.store.list(states=LIVE, limit=MAX_LIVE_JOBS)
            if any(_names_path(text, target) for text in _strings(job.spec))
        ]

    def _prune_later(self, name: str) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self.folder.prune, name))
        self._pruning.add(task)
        task.add_done_callback(self._pruned)

    def _pruned(self, task: asyncio.Task[int]) -> None:
        self._pruning.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("removing old dataset versions failed", exc_info=task.exception())

    async def aclose(self) -> None:
        """Wait for old versions being removed (what is cut short, the next start sweeps)."""
        await asyncio.gather(*self._pruning, return_exceptions=True)


def _count(folder: Path) -> tuple[int, int]:
    files = size = 0
    for path in folder.rglob("*"):
        if path.is_file():
            files += 1
            size += path.stat().st_size
    return files, size


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _names_path(text: str, target: str) -> bool:
    """Whether a job spec's string is the dataset's path or a file inside it."""
    normal = os.path.normpath(text)
    return normal == target or normal.startswith(target + os.sep)
