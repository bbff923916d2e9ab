"""Datasets uploaded by clients, written atomically into the server's data folder.

An upload is staged in a hidden temporary folder and renamed into place only
when it completed, so a dataset is either whole or absent. File paths are
checked before anything is written: relative, no "..", no hidden parts.
"""

from __future__ import annotations

import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from assay.server.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    ResourceExhaustedError,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class UploadedDataset:
    """Where an upload landed and how much it holds."""

    path: Path
    files: int
    bytes: int


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


class DatasetUpload:
    """One upload in progress."""

    def __init__(self, root: Path, name: str, replace: bool, max_bytes: int) -> None:
        if not _NAME.match(name):
            raise InvalidArgumentError(
                f"dataset name {name!r} must use letters, digits, '_', '-', '.' (at most 128)"
            )
        self.target = root / name
        if self.target.exists() and not replace:
            raise FailedPreconditionError(
                f"dataset {name!r} already exists; set replace to overwrite it"
            )
        self._staging = root / f".upload-{uuid.uuid4().hex}"
        self._staging.mkdir(parents=True)
        self._max_bytes = max_bytes
        self._bytes = 0
        self._files: set[PurePosixPath] = set()

    def add(self, path: str, data: bytes) -> None:
        """Append a chunk to a file of the dataset."""
        relative = safe_relative(path)
        self._bytes += len(data)
        if self._bytes > self._max_bytes:
            raise ResourceExhaustedError(
                f"upload exceeds the limit of {self._max_bytes // (1024 * 1024)} MiB"
            )
        destination = self._staging.joinpath(*relative.parts)
        destination.parent.mkdir(parents=True, exist_ok=True)
        with destination.open("ab") as handle:
            handle.write(data)
        self._files.add(relative)

    def commit(self) -> UploadedDataset:
        """Make the dataset visible under its name (replacing an older one)."""
        if not self._files:
            self.abort()
            raise InvalidArgumentError("the upload held no files")
        if self.target.exists():
            shutil.rmtree(self.target)
        self._staging.rename(self.target)
        return UploadedDataset(self.target, len(self._files), self._bytes)

    def abort(self) -> None:
        """Drop everything staged so far."""
        shutil.rmtree(self._staging, ignore_errors=True)
