"""One store for every kind of fitted profile, kept as rows of the server's `Store`.

OOD profiles and detector profiles are stored the same way: one row per
(kind, name, version) holding the profile's JSON document and the ``.npz``
bytes of its arrays (read back with ``allow_pickle=False``: no pickle, so a
stored profile cannot run code). Document and arrays are written in one
transaction, so a reader never sees the new arrays beside the old document.
A `ProfileFormat` says how one kind maps to a document and arrays; the store
does the rest: keys (validated resource names), writing, listing, deleting,
and a cache.

The cache holds parsed profiles with the etag they were read at. The Predict
hot path (`get`) trusts it and never touches the database for a cached
profile; `refresh` (run every ``data.profile_refresh_s`` by a `ProfileRefresher`)
lists the kind's etags in one cheap query and drops every entry that another
replica replaced or deleted, so a change made elsewhere is seen within one
interval. A row that does not parse as this kind's profile (written by another
assay version, or damaged) is not an error for the store: it is listed with
its problem, refused for scoring with `UnreadableProfileError`, and deletable.

The synchronous methods block on the database: call them from a worker thread.
The ``a``-prefixed ones do that for the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from assay.server.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from assay.server.profiles.names import ProfileKey, check_name
from assay.server.store.base import Store
from assay.server.store.codec import dump_json, pack_arrays, unpack_arrays
from assay.server.store.records import ProfileEntry, StoredProfile

P = TypeVar("P")

Arrays = dict[str, np.ndarray]
Document = dict[str, Any]


@dataclass(frozen=True)
class ProfileFormat(Generic[P]):
    """How one kind of profile maps to a JSON document and arrays."""

    kind: str
    """Short kind name, a valid resource name (e.g. "ood", "aigen")."""
    title: str
    """How messages name a profile of this kind (e.g. "OOD profile")."""
    owner: str
    """What a profile belongs to, for messages (e.g. "model", "detector")."""
    stem: str
    """File stem of the kind in the legacy on-disk layout (e.g. "profile")."""
    key: Callable[[P], tuple[str, str]]
    """The (name, version) a profile belongs to."""
    dump: Callable[[P], tuple[Document, Arrays | None]]
    """The JSON document and the arrays (None: no arrays) of a profile; ValueError if invalid."""
    parse: Callable[[Document, Arrays | None], P]
    """A profile from its document and arrays (None: no arrays); ValueError if invalid."""
    remedy: str = "refit it, or delete it"
    """How to get rid of an unreadable profile, for messages."""


class UnreadableProfileError(FailedPreconditionError):
    """A stored profile cannot be read as its kind; it must be refitted or deleted."""


@dataclass(frozen=True)
class Stored(Generic[P]):
    """One stored profile: parsed, or with the reason it cannot be.

    Attributes:
        key: Which profile.
        profile: The parsed profile; None when it is unreadable.
        problem: Why it cannot be read ("unreadable: ..."); empty when it can.
    """

    key: ProfileKey
    profile: P | None
    problem: str = ""


_ABSENT = ""
"""The etag cached for a profile known to be missing (real etags are never empty)."""


class ProfileStore(Generic[P]):
    """Profiles of one kind in a `Store`, one row per (name, version), cached by etag."""

    def __init__(self, store: Store, fmt: ProfileFormat[P]) -> None:
        """Profiles in ``fmt`` kept in ``store``."""
        check_name(fmt.kind, "profile kind")
        check_name(fmt.stem, "profile file stem")
        self.store = store
        self.format = fmt
        self._lock = threading.Lock()
        self._cache: dict[ProfileKey, tuple[str, Stored[P] | None]] = {}
        self._generation = 0
        """Bumped by every local change, so a slow read cannot cache what a change replaced."""

    def key(self, name: object, version: object) -> ProfileKey:
        """The validated key of (name, version); InvalidArgumentError when either is not a name."""
        return ProfileKey.of(self.format.kind, name, version, self.format.owner)

    # -- reading --------------------------------------------------------

    def _parse(self, key: ProfileKey, row: StoredProfile) -> Stored[P]:
        try:
            arrays = None if row.blob is None else unpack_arrays(row.blob)
        except Exception:  # numpy's own message would suggest unpickling: never
            return Stored(key, None, "unreadable: its arrays are not a plain .npz archive")
        try:
            return Stored(key, self.format.parse(row.document, arrays))
        except Exception as exc:  # any failure to parse is the row's problem
            reason = str(exc) or type(exc).__name__
            return Stored(key, None, f"unreadable: {reason}")

    def _read(
        self, key: ProfileKey, etag: str | None = None, remember_absence: bool = False
    ) -> Stored[P] | None:
        """The profile as stored now, parsed once per etag (reuses the cache when unchanged).

        ``etag`` is the stored one when the caller just listed it (else it is
        looked up). Only the serving path remembers that a profile is missing:
        its keys are served models, while a listing or a delete may name anything.
        """
        with self._lock:
            gen = self._generation
            cached = self._cache.get(key)
        if etag is None:
            entries = self.store.profile_entries(self.format.kind, key.name)
            etag = next((e.etag for e in entries if e.version == key.version), _ABSENT)
        if cached is not None and cached[0] == etag:
            return cached[1]
        found: Stored[P] | None
        try:
            row = self.store.get_profile(self.format.kind, key.name, key.version)
        except ValueError as exc:  # the stored document itself is not JSON
            row, found = None, Stored[P](key, None, f"unreadable: the document is not JSON: {exc}")
        else:
            found = None if row is None else self._parse(key, row)
        if row is not None:
            etag = row.entry.etag
        with self._lock:
            if gen != self._generation:
                pass  # changed here meanwhile: what was read may already be outdated
            elif found is not None:
                self._cache[key] = (etag, found)
            elif remember_absence:
                self._cache[key] = (_ABSENT, None)
            else:
                self._cache.pop(key, None)
        return found

    def _usable(self, found: Stored[P] | None) -> P | None:
        if found is None:
            return None
        if found.profile is None:
            raise UnreadableProfileError(self.describe_problem(found))
        return found.profile

    def describe_problem(self, found: Stored[P]) -> str:
        """What is wrong with an unreadable profile and how to fix it, for an error message."""
        key = found.key
        return (
            f"the {self.format.title} of {self.format.owner} {key.name!r} version "
            f"{key.version!r} is {found.problem}; {self.format.remedy}"
        )

    def read(self, name: str, version: str) -> Stored[P] | None:
        """The stored profile, parsed or with its problem; None when there is none.

        Raises:
            InvalidArgumentError: ``name`` or ``version`` is not a valid resource name.
        """
        return self._read(self.key(name, version))

    def load(self, name: str, version: str) -> P | None:
        """The stored profile, or None; re-read only when its etag changed.

        Raises:
            InvalidArgumentError: ``name`` or ``version`` is not a valid resource name.
            UnreadableProfileError: The stored row is not a valid profile of this kind.
        """
        return self._usable(self.read(name, version))

    def entries(self, name: str | None = None) -> list[ProfileEntry]:
        """Every stored profile's key and etag (of one name), by name then version; no payloads."""
        if name is not None:
            self.key(name, "0")
        return self.store.profile_entries(self.format.kind, name)

    def names(self) -> list[str]:
        """Names that have at least one profile."""
        return sorted({e.name for e in self.entries()})

    def versions(self, name: str) -> list[str]:
        """Versions of ``name`` that have a profile; InvalidArgumentError for a bad name."""
        return sorted(e.version for e in self.entries(name))

    def listing(self, entries: Sequence[ProfileEntry]) -> list[Stored[P]]:
        """The listed profiles (from `entries`) that still exist, readable or not.

        A profile whose etag matches the cache is not read again.
        """
        found = [self._read(self.key(e.name, e.version), e.etag) for e in entries]
        return [f for f in found if f is not None]

    def all(self, name: str | None = None) -> list[P]:
        """Every readable stored profile (of one name), by name then version."""
        listed = self.listing(self.entries(name))
        return [f.profile for f in listed if f.profile is not None]

    # -- writing --------------------------------------------------------

    def _changed(self, key: ProfileKey, cached: tuple[str, Stored[P]] | None) -> None:
        with self._lock:
            self._generation += 1
            if cached is None:
                self._cache.pop(key, None)
            else:
                self._cache[key] = cached

    def save(self, profile: P) -> ProfileKey:
        """Write (or replace) the profile of its (name, version), atomically; its key.

        Raises:
            InvalidArgumentError: Its name or version is not a valid resource name.
            ValueError: The format refuses the profile, or its document is not
                strict JSON (nothing is written then).
        """
        key = self.key(*self.format.key(profile))
        document, arrays = self.format.dump(profile)
        try:
            dump_json(document, f"the {self.format.title}")
            blob = None if arrays is None else pack_arrays(arrays)
        except InvalidArgumentError as exc:
            raise ValueError(str(exc)) from None
        entry = self.store.put_profile(self.format.kind, key.name, key.version, document, blob)
        self._changed(key, (entry.etag, Stored(key, profile)))
        return key

    def delete(self, name: str, version: str) -> Stored[P]:
        """Remove a profile, readable or not, and return what was stored.

        Raises:
            InvalidArgumentError: ``name`` or ``version`` is not a valid resource name.
            NotFoundError: There is no such profile.
        """
        key = self.key(name, version)
        found = self._read(key)
        gone = found is not None and self.store.delete_profile(key.kind, key.name, key.version)
        self._changed(key, None)
        if found is None or not gone:
            raise NotFoundError(
                f"{self.format.owner} {name!r} version {version!r} has no {self.format.title}"
            )
        return found

    # -- the event loop's side ------------------------------------------

    async def get(self, name: str, version: str) -> P | None:
        """The profile for serving: from the cache without a database call, else read in a thread.

        Raises:
            InvalidArgumentError: ``name`` or ``version`` is not a valid resource name.
            UnreadableProfileError: The stored row is not a valid profile of this kind.
        """
        key = self.key(name, version)
        cached = self._cache.get(key)
        if cached is not None:
            found = cached[1]
        else:
            found = await asyncio.to_thread(self._read, key, None, True)
        return self._usable(found)

    async def asave(self, profile: P) -> ProfileKey:
        """`save` in a worker thread."""
        return await asyncio.to_thread(self.save, profile)

    async def adelete(self, name: str, version: str) -> Stored[P]:
        """`delete` in a worker thread."""
        return await asyncio.to_thread(self.delete, name, version)

    async def aentries(self, name: str | None = None) -> list[ProfileEntry]:
        """`entries` in a worker thread."""
        return await asyncio.to_thread(self.entries, name)

    async def alisting(self, entries: Sequence[ProfileEntry]) -> list[Stored[P]]:
        """`listing` in a worker thread."""
        return await asyncio.to_thread(self.listing, entries)

    async def aversions(self, name: str) -> list[str]:
        """`versions` in a worker thread."""
        return await asyncio.to_thread(self.versions, name)

    # -- staying current ------------------------------------------------

    def _drop_stale(self, entries: Sequence[ProfileEntry], gen: int) -> int:
        current = {(e.name, e.version): e.etag for e in entries}
        with self._lock:
            if gen != self._generation:
                return 0  # a local change raced the listing; the next round checks again
            stale = [
                key
                for key, (etag, _) in self._cache.items()
                if current.get((key.name, key.version), _ABSENT) != etag
            ]
            for key in stale:
                del self._cache[key]
        return len(stale)

    async def refresh(self) -> int:
        """Drop cached profiles that were replaced or deleted elsewhere; how many went.

        One `Store.profile_entries` call (no payloads), in a worker thread.
        """
        with self._lock:
            gen = self._generation
        entries = await asyncio.to_thread(self.store.profile_entries, self.format.kind)
        return self._drop_stale(entries, gen)
