"""One versioned on-disk store for every kind of fitted profile.

OOD profiles and detector profiles are stored the same way:
``<root>/<name>/<version>/<stem>.json`` (the versioned JSON document) and,
when the profile has arrays, ``<stem>.npz`` beside it (``np.savez``, read
back with ``allow_pickle=False``: no pickle, so a stored profile cannot run
code). A `ProfileFormat` says how one kind maps to those files; the store
does the rest: keys (validated resource names, never raw paths), writing,
listing, deleting, and a cache that reloads a profile when its file changes.

Saving writes the npz first and the JSON last, each through a temporary file
and ``os.replace``, so a reader never sees a half-written file; a crash
between the two leaves the new arrays beside the old JSON (OOD profiles
detect that through their arrays digest).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import numpy as np

from assay.server.errors import InvalidArgumentError, NotFoundError
from assay.server.profiles.names import ProfileKey, check_name

P = TypeVar("P")

Arrays = dict[str, np.ndarray]
Document = dict[str, Any]


@dataclass(frozen=True)
class ProfileFormat(Generic[P]):
    """How one kind of profile maps to its files."""

    kind: str
    """Short kind name, a valid resource name (e.g. "ood", "aigen")."""
    title: str
    """How messages name a profile of this kind (e.g. "OOD profile")."""
    owner: str
    """What a profile belongs to, for messages (e.g. "model", "detector")."""
    stem: str
    """File stem inside the version folder (e.g. "profile")."""
    key: Callable[[P], tuple[str, str]]
    """The (name, version) a profile belongs to."""
    dump: Callable[[P], tuple[Document, Arrays | None]]
    """The JSON document and the arrays (None: no npz) of a profile; ValueError if invalid."""
    parse: Callable[[Document, Arrays | None], P]
    """A profile from its document and arrays (None: no npz); ValueError if invalid."""


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_files(stem: Path, document: Mapping[str, Any], arrays: Mapping[str, Any] | None) -> None:
    """Write ``<stem>.npz`` (or remove it when ``arrays`` is None), then ``<stem>.json``.

    The JSON is strict (no NaN or infinity) and checked before anything is written.

    Raises:
        ValueError: The document is not strict JSON.
    """
    try:
        text = json.dumps(document, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"profile is not JSON-serialisable: {exc}") from None
    npz = stem.with_name(stem.name + ".npz")
    if arrays is None:
        npz.unlink(missing_ok=True)
    else:
        savez: Callable[..., None] = np.savez  # mypy: ``**arrays`` could shadow its keywords
        _atomic_write(npz, lambda handle: savez(handle, **arrays))
    _atomic_write(stem.with_name(stem.name + ".json"), lambda handle: handle.write(text.encode()))


def read_files(stem: Path) -> tuple[Any, Arrays | None]:
    """The parsed ``<stem>.json`` and the arrays of ``<stem>.npz`` (None when absent).

    Raises:
        FileNotFoundError: No JSON file.
        ValueError: The JSON file is not valid JSON.
    """
    json_path = stem.with_name(stem.name + ".json")
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{json_path} is not valid JSON: {exc}") from None
    npz = stem.with_name(stem.name + ".npz")
    if not npz.exists():
        return document, None
    with np.load(npz, allow_pickle=False) as archive:
        return document, {key: archive[key] for key in archive.files}


class ProfileStore(Generic[P]):
    """Profiles of one kind on disk, one per (name, version), cached until their file changes."""

    def __init__(self, root: Path, fmt: ProfileFormat[P]) -> None:
        """A store under ``root`` (created on first save) for profiles in ``fmt``."""
        check_name(fmt.kind, "profile kind")
        check_name(fmt.stem, "profile file stem")
        self.root = Path(root)
        self.format = fmt
        self._cache: dict[ProfileKey, tuple[tuple[int, int, int], P]] = {}

    def key(self, name: object, version: object) -> ProfileKey:
        """The validated key of (name, version); InvalidArgumentError when either is not a name."""
        return ProfileKey.of(self.format.kind, name, version, self.format.owner)

    def _stem(self, key: ProfileKey) -> Path:
        return self.root / key.name / key.version / self.format.stem

    def _json(self, key: ProfileKey) -> Path:
        stem = self._stem(key)
        return stem.with_name(stem.name + ".json")

    def save(self, profile: P) -> ProfileKey:
        """Write (or replace) the profile of its (name, version); its key.

        Raises:
            InvalidArgumentError: Its name or version is not a valid resource name.
            ValueError: The format refuses the profile (nothing is written then).
        """
        key = self.key(*self.format.key(profile))
        document, arrays = self.format.dump(profile)
        stem = self._stem(key)
        stem.parent.mkdir(parents=True, exist_ok=True)
        write_files(stem, document, arrays)
        self._cache.pop(key, None)
        return key

    def load(self, name: str, version: str) -> P | None:
        """The stored profile, or None; reloaded when its JSON file changed.

        Raises:
            InvalidArgumentError: ``name`` or ``version`` is not a valid resource name.
            ValueError: The stored files are not a valid profile of this kind.
        """
        key = self.key(name, version)
        try:
            stat = self._json(key).stat()
        except FileNotFoundError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        cached = self._cache.get(key)
        if cached is None or cached[0] != stamp:
            document, arrays = read_files(self._stem(key))
            if not isinstance(document, dict):
                raise ValueError(f"{self._json(key)} is not a JSON object")
            cached = (stamp, self.format.parse(document, arrays))
            self._cache[key] = cached
        return cached[1]

    def names(self) -> list[str]:
        """Names that have a folder in the store (entries that are not valid names are skipped)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _valid(p.name))

    def versions(self, name: str) -> list[str]:
        """Versions of ``name`` that have a profile; InvalidArgumentError for a bad name."""
        folder = self.root / self.key(name, "0").name
        if not folder.is_dir():
            return []
        return sorted(
            p.name
            for p in folder.iterdir()
            if _valid(p.name) and (p / f"{self.format.stem}.json").exists()
        )

    def all(self, name: str | None = None) -> list[P]:
        """Every stored profile (of one name), by name then version."""
        names = [name] if name else self.names()
        found = [self.load(n, v) for n in names for v in self.versions(n)]
        return [p for p in found if p is not None]

    def delete(self, name: str, version: str) -> P:
        """Remove a profile and return it.

        Raises:
            InvalidArgumentError: ``name`` or ``version`` is not a valid resource name.
            NotFoundError: There is no such profile.
        """
        key = self.key(name, version)
        profile = self.load(name, version)
        if profile is None:
            raise NotFoundError(
                f"{self.format.owner} {name!r} version {version!r} has no {self.format.title}"
            )
        stem = self._stem(key)
        # Only this kind's files go: another kind may keep its profile in the same folder.
        for suffix in (".json", ".npz"):
            stem.with_name(stem.name + suffix).unlink(missing_ok=True)
        for folder in (stem.parent, stem.parent.parent):  # version, then name, when left empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._cache.pop(key, None)
        return profile


def _valid(name: str) -> bool:
    try:
        check_name(name, "name")
    except InvalidArgumentError:
        return False
    return True
