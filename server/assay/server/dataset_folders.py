"""The uploads root on disk: whole dataset versions behind atomically switched links.

Layout (every bookkeeping entry is hidden, so `DatasetRoots` never lists it)::

    <name>                        symlink -> .versions/<name>/<version>   what jobs open
    .versions/<name>/<version>/   one complete upload; never written once visible
    .staging/<version>/           an upload still being received
    .staging/<version>.lock       flock(2)ed by the process receiving that upload
    .staging/trash-<id>/          a superseded or deleted version being removed
    .link-<version>               a new link about to replace <name>

Why a crash (``kill -9`` at any instruction) leaves the old or the new dataset:
a dataset only ever changes by rename(2) or symlink(2), each atomic. An upload
is written in staging, renamed whole into ``.versions`` and made visible by
renaming a fresh link over ``<name>``; before that rename ``<name>`` still
names the old version, after it the new one. A version is renamed into the
trash before it is deleted, so ``.versions`` only ever holds whole versions.
A delete renames ``.versions/<name>`` away first (the link dangles: the dataset
is gone at once), then removes the link.

A superseded version is removed (`prune`) once no live job names it (jobs
pin the version they started on, `dataset_pins`) and its link switched more
than ``settle_s`` ago: a job being started elsewhere may have pinned it just
before the switch and not be in the store yet.

Links are relative, so the data folder may be mounted at another path (a
shared volume on each replica). Whether an upload's owner is alive is told by
its lock: the kernel drops a flock when its process dies, so `sweep` (at start)
removes exactly what dead processes left, never a live replica's upload.

Shared volumes. Replicas sharing the uploads root on a ReadWriteMany volume
rely on flock(2) working across clients: one replica's lock must be seen by
another's ``LOCK_NB`` probe. NFSv4 (Linux maps flock to byte-range locks
there), CephFS and Amazon EFS do this; SMB/CIFS mounted with ``nobrl`` and
NFSv3 without the NLM lock daemon (``nolock``) keep locks local to one
client, and a starting replica would then sweep another's upload in progress.
Use one of the former, or have one replica receive uploads.

Everything here blocks on the filesystem: call it from a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import threading
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from assay.server.errors import FailedPreconditionError

VERSIONS = ".versions"
STAGING = ".staging"
_LINK_PREFIX = ".link-"
_TRASH_PREFIX = "trash-"
NO_PINS: Mapping[str, Collection[str]] = MappingProxyType({})
"""No version is in use beyond what links show."""


def new_version() -> str:
    """A fresh upload id; ids sort by creation time."""
    return f"{time.time_ns():016x}-{uuid.uuid4().hex[:8]}"


@dataclass
class Staged:
    """An upload's staging folder and the lock that says its owner is alive."""

    version: str
    path: Path
    lock: Path
    fd: int
    _releasing: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def release(self) -> None:
        """Give up the lock (the upload was published or discarded); idempotent.

        Thread-safe: a publish and a discard on two worker threads must not
        close the descriptor twice (the second close could hit a file another
        thread opened meanwhile under the same number).
        """
        with self._releasing:
            if self.fd < 0:
                return
            with contextlib.suppress(FileNotFoundError):
                self.lock.unlink()
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        """Delete the staged files and give up the lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.release()


@dataclass(frozen=True)
class SweepReport:
    """What a sweep removed or repaired, for the start-up log."""

    staging: int = 0
    versions: int = 0
    links: int = 0
    adopted: int = 0


class UploadsFolder:
    """Datasets under one uploads root, as described in the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._versions = root / VERSIONS
        self._staging = root / STAGING

    def path(self, name: str) -> Path:
        """Where jobs open the dataset: the link, never a version folder."""
        return self.root / name

    def names(self) -> list[str]:
        """Every visible dataset (a link or a folder), by name."""
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith("."))

    def exists(self, name: str) -> bool:
        """Whether ``name`` is taken (a link, even a dangling one, or a folder)."""
        return os.path.lexists(self.path(name))

    def current(self, name: str) -> str | None:
        """The version ``name`` shows; None without a link into ``.versions/<name>``."""
        try:
            target = Path(os.readlink(self.path(name)))
        except (FileNotFoundError, OSError):
            return None
        if target.parent != Path(VERSIONS, name):
            return None
        return target.name

    def stage(self) -> Staged:
        """A new, locked staging folder for one upload."""
        self._staging.mkdir(parents=True, exist_ok=True)
        version = new_version()
        lock = self._staging / f"{version}.lock"
        hidden = self._staging / f".{version}.lock"  # locked before it is visible under its name
        fd = os.open(hidden, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(hidden, lock)
        path = self._staging / version
        path.mkdir()
        return Staged(version, path, lock, fd)

    def publish(self, name: str, staged: Staged, replace: bool) -> str | None:
        """Make the staged upload ``name``'s files in one rename; returns the version it replaced.

        Raises:
            FailedPreconditionError: ``name`` exists and ``replace`` is False.
        """
        if self.path(name).is_dir() and not self.path(name).is_symlink():
            self._adopt_folder(name)
        previous = self.current(name)
        folder = self._versions / name
        folder.mkdir(parents=True, exist_ok=True)
        os.rename(staged.path, folder / staged.version)
        try:
            self._link(name, staged.version, replace)
        except BaseException:  # not shown: remove it, or a sweep would link it as an orphan
            self._discard(folder / staged.version)
            raise
        return previous

    def _link(self, name: str, version: str, replace: bool) -> None:
        target = os.path.join(VERSIONS, name, version)
        if replace:
            link = self.root / f"{_LINK_PREFIX}{version}"
            os.symlink(target, link)
            try:
                os.replace(link, self.path(name))  # the one step that switches versions
            except BaseException:
                link.unlink(missing_ok=True)
                raise
            return
        try:
            os.symlink(target, self.path(name))  # fails if the name was taken meanwhile
        except FileExistsError:
            raise FailedPreconditionError(
                f"dataset {name!r} already exists; set replace to overwrite it"
            ) from None

    def switched_at(self, name: str) -> float | None:
        """When ``name``'s link was made (its mtime; a link is never modified), or None."""
        try:
            return self.path(name).lstat().st_mtime
        except FileNotFoundError:
            return None

    def prune(self, name: str, keep: Collection[str] = (), settle_s: float = 0.0) -> int:
        """Remove ``name``'s versions that its link no longer shows; how many went.

        Args:
            name: The dataset.
            keep: Versions to keep anyway (live jobs read them).
            settle_s: Keep every version while the link is younger than this.
        """
        folder = self._versions / name
        try:
            versions = sorted(p.name for p in folder.iterdir())
        except FileNotFoundError:
            return 0
        switched = self.switched_at(name)
        if switched is not None and time.time() - switched < settle_s:
            return 0
        removed = 0
        for version in versions:
            # Lock first, link second: once an upload unlocks, its link switch has happened.
            if version in keep or self._locked(version) or version == self.current(name):
                continue
            self._discard(folder / version)
            removed += 1
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
        return removed

    def prune_all(self, keep: Mapping[str, Collection[str]], settle_s: float = 0.0) -> int:
        """`prune` every dataset that has versions; how many versions went."""
        if not self._versions.is_dir():
            return 0
        return sum(
            self.prune(folder.name, keep.get(folder.name, ()), settle_s)
            for folder in sorted(self._versions.iterdir())
        )

    def remove(self, name: str) -> bool:
        """Delete dataset ``name``: gone at once, files removed after; False when absent."""
        link = self.path(name)
        if not os.path.lexists(link):
            return False
        if link.is_dir() and not link.is_symlink():
            self._adopt_folder(name)
        folder = self._versions / name
        if folder.exists():
            self._discard(folder)  # the link dangles from here on: the dataset is gone
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        return True

    def sweep(
        self, keep: Mapping[str, Collection[str]] | None = NO_PINS, settle_s: float = 0.0
    ) -> SweepReport:
        """Remove what dead uploads left and repair interrupted switches; run at start.

        Superseded versions go as in `prune`, except those in ``keep`` (by
        name); ``keep=None`` keeps them all (which are in use is unknown).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self._sweep_staging()
        links = 0
        for entry in self.root.iterdir():
            if entry.name.startswith(_LINK_PREFIX) or self._dangling(entry):
                entry.unlink(missing_ok=True)
                links += 1
            elif entry.is_dir() and not entry.is_symlink() and not entry.name.startswith("."):
                self._adopt_folder(entry.name)
        adopted = versions = 0
        if self._versions.is_dir():
            for folder in sorted(self._versions.iterdir()):
                adopted += self._adopt_orphan(folder.name)
                if keep is not None:
                    versions += self.prune(folder.name, keep.get(folder.name, ()), settle_s)
        return SweepReport(staging, versions, links, adopted)

    def _sweep_staging(self) -> int:
        if not self._staging.is_dir():
            return 0
        removed = 0
        for entry in sorted(self._staging.iterdir()):
            if entry.suffix == ".lock" or self._locked(entry.name):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
        for lock in self._staging.glob("*.lock"):  # pathlib's glob includes hidden names
            version = lock.name.removeprefix(".").removesuffix(".lock")
            if not (self._staging / version).exists() and not _held(lock):
                lock.unlink(missing_ok=True)
        return removed

    def _dangling(self, entry: Path) -> bool:
        """A link of ours whose version is gone (a delete cut short)."""
        if not entry.is_symlink() or entry.exists():
            return False
        return Path(os.readlink(entry)).parts[:1] == (VERSIONS,)

    def _adopt_orphan(self, name: str) -> int:
        """Link the newest version of a name that has none (a first upload cut short)."""
        if os.path.lexists(self.path(name)):
            return 0
        folder = self._versions / name
        versions = sorted(p.name for p in folder.iterdir() if not self._locked(p.name))
        if not versions:
            return 0
        with contextlib.suppress(FileExistsError):
            os.symlink(os.path.join(VERSIONS, name, versions[-1]), self.path(name))
        return 1

    def _adopt_folder(self, name: str) -> None:
        """Turn a plain folder (written before versions existed) into a linked version.

        Two steps, so not atomic: a crash between them leaves an unlinked
        version, which the next sweep links (`_adopt_orphan`).
        """
        version = new_version()
        folder = self._versions / name
        folder.mkdir(parents=True, exist_ok=True)
        os.rename(self.path(name), folder / version)
        with contextlib.suppress(FileExistsError):
            os.symlink(os.path.join(VERSIONS, name, version), self.path(name))

    def _locked(self, version: str) -> bool:
        """Whether a live process holds ``version``'s upload lock."""
        return _held(self._staging / f"{version}.lock")

    def _discard(self, path: Path) -> None:
        """Rename ``path`` into the trash (atomic), then delete it."""
        self._staging.mkdir(parents=True, exist_ok=True)
        trash = self._staging / f"{_TRASH_PREFIX}{uuid.uuid4().hex}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)


def _held(lock: Path) -> bool:
    """Whether a live process holds the flock on ``lock`` (False when there is no such file)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the lock if we just took it
    return False
