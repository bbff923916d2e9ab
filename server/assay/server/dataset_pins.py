"""Jobs name the dataset version they started on, not the link that a replace moves.

A job's spec may name an uploaded dataset by its link, ``<uploads>/<name>``,
or a file through it (a manifest). A replace switches that link, so a job
resumed after a restart, or taken over by another replica, would read the
new version for its remaining units and mix two datasets in one report. So
at Start every such path in the spec is pinned to the version folder the
link shows then, ``<uploads>/.versions/<name>/<version>/...``: every attempt
of the job reads the same files, and its report names that version.

The rewrite walks every string of the spec's JSON, not a list of fields, so
the dataset fields (`DatasetPath`) of every job kind, present and future, are
covered; only a string that names a path through the uploads root changes
(paths elsewhere, and plain folders not yet turned into versions, stay as
given). The same walk tells which versions live jobs name (pruning keeps
them) and whether a job names a dataset at all (DeleteDataset refuses).

Paths compare as written (normalised, not resolved) against the uploads root
as configured, made absolute, and resolved, so ``data.dir`` given relative or
through a symlink still matches.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import PurePath
from typing import Any, TypeVar

from assay.server.dataset_folders import VERSIONS, UploadsFolder
from assay.server.jobs.specs import JobSpec, parse_spec

SpecT = TypeVar("SpecT", bound=JobSpec)


class DatasetPins:
    """Pins a spec's uploaded-dataset paths and reads the pins back from stored specs."""

    def __init__(self, folder: UploadsFolder) -> None:
        self.folder = folder
        root = folder.root
        forms = (str(root), os.path.abspath(root), os.path.realpath(root))
        self._prefixes = tuple(dict.fromkeys(PurePath(os.path.normpath(f)) for f in forms))

    def pin(self, spec: SpecT) -> SpecT:
        """``spec`` with each path through an uploaded dataset's link pinned to its version.

        Blocks on the filesystem (reads links): call it from a worker thread.

        Raises:
            InvalidArgumentError: The pinned spec no longer validates (a path too long).
        """
        fields = spec.model_dump(mode="json")
        pinned = _rewrite(fields, self._pin_path)
        if pinned == fields:
            return spec
        return parse_spec(type(spec), pinned, "job spec with pinned dataset versions")

    def versions_in_use(self, specs: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
        """The versions ``specs`` pin, by dataset name."""
        found: dict[str, set[str]] = {}
        for spec in specs:
            for text in strings(spec):
                split = self._split(text)
                if split is not None and len(split[1]) >= 3 and split[1][0] == VERSIONS:
                    found.setdefault(split[1][1], set()).add(split[1][2])
        return found

    def names(self, spec: Mapping[str, Any], name: str) -> bool:
        """Whether ``spec`` names dataset ``name``, by its link or a pinned version."""
        for text in strings(spec):
            split = self._split(text)
            if split is None:
                continue
            parts = split[1]
            if parts[0] == name or (len(parts) >= 2 and parts[:2] == (VERSIONS, name)):
                return True
        return False

    def _pin_path(self, text: str) -> str:
        split = self._split(text)
        if split is None or split[1][0].startswith("."):
            return text  # not under the uploads root, or already a version
        prefix, (name, *rest) = split
        version = self.folder.current(name)
        if version is None:
            return text  # a plain folder (adopted at the next start) or nothing at all
        return str(prefix.joinpath(VERSIONS, name, version, *rest))

    def _split(self, text: str) -> tuple[PurePath, tuple[str, ...]] | None:
        """The uploads root as ``text`` spells it and the parts below it; None outside."""
        if not text or "\x00" in text:
            return None
        path = PurePath(os.path.normpath(text))
        for prefix in self._prefixes:
            if path != prefix and path.is_relative_to(prefix):
                return prefix, path.relative_to(prefix).parts
        return None


def link_path(path: str) -> str:
    """``path`` with a pinned ``.versions/<name>/<version>`` written as the link ``<name>``.

    For names shown to people (an OOD set is called after its folder), which
    should not turn into version ids when the path was pinned.
    """
    parts = PurePath(path).parts
    for i in range(len(parts) - 2):
        if parts[i] == VERSIONS:
            return str(PurePath(*parts[:i], parts[i + 1], *parts[i + 3 :]))
    return path


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value (a stored spec), depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings(item)


def _rewrite(value: Any, change: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {key: _rewrite(item, change) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_rewrite(item, change) for item in value]
    return value
