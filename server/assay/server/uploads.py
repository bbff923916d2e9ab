"""One dataset upload in progress: checked, buffered, written off the event loop.

File paths are checked before anything is written: relative, no "..", no
hidden parts. Chunks are buffered and written in batches by a worker thread
(one thread hop per few MiB or few hundred files, not per chunk), so a large
upload never blocks the event loop. Committing hands the staged folder to
`UploadsFolder.publish`, whose single rename makes it visible.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from assay.server.dataset_folders import Staged, UploadsFolder
from assay.server.errors import InvalidArgumentError, ResourceExhaustedError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
FLUSH_BYTES = 4 << 20
"""Buffered chunks are written in one worker-thread call per this many bytes..."""
FLUSH_CHUNKS = 256
"""... or this many chunks, whichever comes first."""


def check_name(name: str) -> str:
    """``name`` if it can be a dataset's folder name, else INVALID_ARGUMENT."""
    if not _NAME.match(name):
        raise InvalidArgumentError(
            f"dataset name {name!r} must use letters, digits, '_', '-', '.' (at most 128)"
        )
    return name


def safe_relative(path: str) -> PurePosixPath:
    """A dataset-relative file path, refused if it could escape or hide."""
    candidate = PurePosixPath(path)
    if (
        not path
        or candidate.is_absolute()
        or "\\" in path
        or any(part in ("", ".", "..") or part.startswith(".") for part in candidate.parts)
    ):
        raise InvalidArgumentError(
            f"file path {path!r} must be relative, without '..' or hidden parts "
            "(e.g. 'cat/001.png')"
        )
    return candidate


@dataclass
class _Writer:
    """Appends chunks under the staging folder; used from worker threads only."""

    root: Path
    made: set[Path] = field(default_factory=set)

    def write(self, chunks: list[tuple[PurePosixPath, bytes]]) -> None:
        for relative, data in chunks:
            destination = self.root.joinpath(*relative.parts)
            if destination.parent not in self.made:
                destination.parent.mkdir(parents=True, exist_ok=True)
                self.made.add(destination.parent)
            with destination.open("ab") as handle:
                handle.write(data)


@dataclass(frozen=True)
class Published:
    """A committed upload: its version, size, and the version it replaced."""

    version: str
    files: int
    bytes: int
    previous: str | None


class DatasetUpload:
    """One upload: `add` chunks, then `commit` or `discard` it (from the event loop)."""

    def __init__(
        self, folder: UploadsFolder, name: str, replace: bool, staged: Staged, max_bytes: int
    ) -> None:
        self._folder = folder
        self.name = name
        self._replace = replace
        self._staged = staged
        self._max_bytes = max_bytes
        self._writer = _Writer(staged.path)
        self._paths: set[PurePosixPath] = set()
        self._pending: list[tuple[PurePosixPath, bytes]] = []
        self._pending_bytes = 0
        self.bytes = 0
        self.published = False
        """Set once the link shows this upload (the dataset is visible from then on)."""

    @property
    def version(self) -> str:
        """The upload's id, which becomes the dataset's version."""
        return self._staged.version

    async def add(self, path: str, data: bytes) -> None:
        """Append a chunk to a file of the dataset."""
        relative = safe_relative(path)
        self.bytes += len(data)
        if self.bytes > self._max_bytes:
            raise ResourceExhaustedError(
                f"upload exceeds the limit of {self._max_bytes // (1024 * 1024)} MiB"
            )
        self._paths.add(relative)
        self._pending.append((relative, data))
        self._pending_bytes += len(data)
        if self._pending_bytes >= FLUSH_BYTES or len(self._pending) >= FLUSH_CHUNKS:
            await self._flush()

    async def _flush(self) -> None:
        chunks, self._pending, self._pending_bytes = self._pending, [], 0
        if chunks:
            await asyncio.to_thread(self._writer.write, chunks)

    async def commit(self) -> Published:
        """Write what is buffered and switch the dataset to this upload, atomically.

        Raises:
            InvalidArgumentError: The upload held no files.
            FailedPreconditionError: The name is taken and replace was not set.
        """
        if not self._paths:
            raise InvalidArgumentError("the upload held no files")
        await self._flush()
        previous = await asyncio.to_thread(self._publish)
        return Published(self.version, len(self._paths), self.bytes, previous)

    def _publish(self) -> str | None:
        previous = self._folder.publish(self.name, self._staged, self._replace)
        self.published = True
        self._staged.release()
        return previous

    async def discard(self) -> None:
        """Drop everything staged; completes even if the calling task is cancelled."""
        await asyncio.shield(asyncio.to_thread(self._staged.discard))
