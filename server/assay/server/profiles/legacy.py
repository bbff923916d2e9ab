"""The on-disk profile layout of servers before the store, and its one-time import.

Servers before the `Store` kept each profile as two files,
``<root>/<name>/<version>/<stem>.json`` and (with arrays) ``<stem>.npz``
beside it, with OOD profiles under ``<data.dir>/profiles`` and detector
profiles under ``<data.dir>/aigen_profiles``. At start the server imports the
profiles the store does not have yet (the store's copy wins), then renames the
folder to ``<folder>.imported`` so nothing is imported twice and nothing is
lost. The files go in as they are: a torn pair is imported too, and the store
then lists it as unreadable, where the API can delete it.

`write_files` and `read_files` remain the format of ``save_profile`` /
``load_profile`` (a profile exported to files).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from assay.server.errors import AssayError
from assay.server.profiles.names import check_name
from assay.server.profiles.store import Arrays, ProfileFormat
from assay.server.store.base import Store

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class ImportResult:
    """What one legacy folder's import did."""

    imported: list[str]
    """``name/version`` of each profile copied into the store."""
    kept: list[str]
    """Those the store already had (its copy wins)."""
    failed: list[str]
    """``name/version: reason`` of each that could not be imported (left in the moved folder)."""
    moved_to: Path | None
    """Where the folder went; None when there was nothing to import."""


def _valid(name: str) -> bool:
    try:
        check_name(name, "name")
    except AssayError:
        return False
    return True


def _read_row(stem: Path) -> tuple[dict[str, Any], bytes | None]:
    """The document and the raw npz bytes of one legacy profile, as they are on disk."""
    document = json.loads(stem.with_name(stem.name + ".json").read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError("the JSON file is not an object")
    npz = stem.with_name(stem.name + ".npz")
    return document, npz.read_bytes() if npz.exists() else None


def _aside(folder: Path) -> Path:
    target = folder.with_name(folder.name + ".imported")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}.imported.{n}")
    return target


def import_folder(store: Store, folder: Path, fmt: ProfileFormat[Any]) -> ImportResult:
    """Copy the legacy profiles under ``folder`` the store lacks, then move ``folder`` aside.

    Blocking (filesystem and database): run it in a worker thread.
    """
    if not folder.is_dir():
        return ImportResult([], [], [], None)
    imported: list[str] = []
    kept: list[str] = []
    failed: list[str] = []
    for path in sorted(folder.glob(f"*/*/{fmt.stem}.json")):
        stem = path.with_suffix("")
        name, version = stem.parent.parent.name, stem.parent.name
        label = f"{name}/{version}"
        if not (_valid(name) and _valid(version)):
            continue
        if store.get_profile(fmt.kind, name, version) is not None:
            kept.append(label)
            continue
        try:
            document, blob = _read_row(stem)
            store.put_profile(fmt.kind, name, version, document, blob)
        except (OSError, ValueError, AssayError) as exc:  # JSONDecodeError is a ValueError
            failed.append(f"{label}: {exc}")
            continue
        imported.append(label)
    moved = _aside(folder)
    folder.rename(moved)
    return ImportResult(imported, kept, failed, moved)


def import_legacy(store: Store, folders: Mapping[Path, ProfileFormat[Any]]) -> None:
    """Import every legacy profile folder (``folder -> format``) and log what happened.

    Blocking: run it in a worker thread.
    """
    for folder, fmt in folders.items():
        try:
            result = import_folder(store, folder, fmt)
        except OSError as exc:  # e.g. a read-only data folder: serve anyway, the store wins
            log.warning(
                "could not import the %ss in %s (tried again at the next start): %s",
                fmt.title,
                folder,
                exc,
            )
            continue
        if result.moved_to is None:
            continue
        log.info(
            "imported %d %s(s) from %s into the store (%s); %d already there; folder moved to %s",
            len(result.imported),
            fmt.title,
            folder,
            ", ".join(result.imported) or "none",
            len(result.kept),
            result.moved_to,
        )
        for failure in result.failed:
            log.warning(
                "could not import the %s %s; it stays in %s", fmt.title, failure, result.moved_to
            )
