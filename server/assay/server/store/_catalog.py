"""Profiles, dataset metadata and the upload audit log, written once for both engines.

A profile is one row (document and arrays blob together), so replacing it is
one statement and no reader ever sees half of one. Its etag is a fresh random
id on every write, which is all a cache needs to notice a replacement.
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Mapping
from typing import Any

from assay.server.errors import InvalidArgumentError
from assay.server.store._jobs import check_blob
from assay.server.store._sql import SqlBase, Tx
from assay.server.store.codec import dump_json
from assay.server.store.records import DatasetRecord, ProfileEntry, StoredProfile, UploadEvent

_ENTRY = "kind, name, version, etag, updated_at, size"
_DATASET = "name, version, files, bytes, created_at, uploaded_by"
_EVENT = "dataset, version, action, files, bytes, at, actor, detail"
_ACTIONS = frozenset({"created", "replaced", "deleted", "failed"})


class CatalogMixin(SqlBase):
    """Profiles, datasets and uploads; see Store for what each method promises."""

    def put_profile(
        self,
        kind: str,
        name: str,
        version: str,
        document: Mapping[str, Any],
        blob: bytes | None,
    ) -> ProfileEntry:
        """See Store.put_profile; every write gets a new etag."""
        _check_key(kind, name, version)
        text = dump_json(document, f"{kind} profile {name}:{version}")
        if blob is not None:
            blob = bytes(blob)
            check_blob(blob, f"{kind} profile {name}:{version}")
        size = len(text.encode()) + len(blob or b"")
        etag = uuid.uuid4().hex
        with self._write() as tx:
            now = tx.now()
            tx.execute(
                "INSERT INTO profiles "
                "(kind, name, version, document, blob, etag, updated_at, size) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kind, name, version) DO UPDATE SET "
                "document = excluded.document, blob = excluded.blob, etag = excluded.etag, "
                "updated_at = excluded.updated_at, size = excluded.size",
                (kind, name, version, text, blob, etag, now, size),
            )
        return ProfileEntry(kind, name, version, etag, now, size)

    def get_profile(self, kind: str, name: str, version: str) -> StoredProfile | None:
        """See Store.get_profile."""
        with self._read() as tx:
            row = tx.execute(
                f"SELECT {_ENTRY}, document, blob FROM profiles "
                "WHERE kind = ? AND name = ? AND version = ?",
                (kind, name, version),
            ).fetchone()
        if row is None:
            return None
        blob = None if row[7] is None else bytes(row[7])
        return StoredProfile(ProfileEntry(*row[:6]), json.loads(row[6]), blob)

    def profile_entries(self, kind: str, name: str | None = None) -> builtins.list[ProfileEntry]:
        """See Store.profile_entries."""
        sql, params = f"SELECT {_ENTRY} FROM profiles WHERE kind = ?", [kind]
        if name is not None:
            sql += " AND name = ?"
            params.append(name)
        with self._read() as tx:
            rows = tx.execute(sql + " ORDER BY name, version", params).fetchall()
        return [ProfileEntry(*row) for row in rows]

    def delete_profile(self, kind: str, name: str, version: str) -> bool:
        """See Store.delete_profile."""
        with self._write() as tx:
            gone = tx.execute(
                "DELETE FROM profiles WHERE kind = ? AND name = ? AND version = ?",
                (kind, name, version),
            )
            return gone.rowcount > 0

    def put_dataset(self, record: DatasetRecord, event: UploadEvent) -> None:
        """See Store.put_dataset."""
        if not record.name:
            raise InvalidArgumentError("a dataset name must be a non-empty string")
        _check_event(event)
        with self._write() as tx:
            tx.execute(
                f"INSERT INTO datasets ({_DATASET}) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET version = excluded.version, "
                "files = excluded.files, bytes = excluded.bytes, "
                "created_at = excluded.created_at, uploaded_by = excluded.uploaded_by",
                (
                    record.name,
                    record.version,
                    record.files,
                    record.bytes,
                    record.created_at,
                    record.uploaded_by,
                ),
            )
            _insert_event(tx, event)

    def dataset(self, name: str) -> DatasetRecord | None:
        """See Store.dataset."""
        with self._read() as tx:
            row = tx.execute(f"SELECT {_DATASET} FROM datasets WHERE name = ?", (name,)).fetchone()
        return None if row is None else DatasetRecord(*row)

    def datasets(self) -> builtins.list[DatasetRecord]:
        """See Store.datasets."""
        with self._read() as tx:
            rows = tx.execute(f"SELECT {_DATASET} FROM datasets ORDER BY name").fetchall()
        return [DatasetRecord(*row) for row in rows]

    def delete_dataset(self, name: str, event: UploadEvent) -> bool:
        """See Store.delete_dataset; nothing is logged for a dataset that was not known."""
        _check_event(event)
        with self._write() as tx:
            if tx.execute("DELETE FROM datasets WHERE name = ?", (name,)).rowcount == 0:
                return False
            _insert_event(tx, event)
            return True

    def log_upload(self, event: UploadEvent) -> None:
        """See Store.log_upload."""
        _check_event(event)
        with self._write() as tx:
            _insert_event(tx, event)

    def upload_log(
        self, dataset: str | None = None, limit: int = 100
    ) -> builtins.list[UploadEvent]:
        """See Store.upload_log; ties in time keep the order they were logged in."""
        if limit < 1:
            raise InvalidArgumentError(f"limit must be >= 1, got {limit}")
        where, params = ("dataset = ?", [dataset]) if dataset is not None else ("TRUE", [])
        sql = f"SELECT {_EVENT} FROM uploads WHERE {where} ORDER BY at DESC, id DESC LIMIT ?"
        with self._read() as tx:
            rows = tx.execute(sql, [*params, limit]).fetchall()
        return [UploadEvent(*row) for row in rows]


def _check_key(kind: str, name: str, version: str) -> None:
    for field, value in (("kind", kind), ("name", name), ("version", version)):
        if not value:
            raise InvalidArgumentError(f"a profile {field} must be a non-empty string")


def _check_event(event: UploadEvent) -> None:
    if not event.dataset:
        raise InvalidArgumentError("an upload event must name its dataset")
    if event.action not in _ACTIONS:
        raise InvalidArgumentError(
            f"upload action must be one of {sorted(_ACTIONS)}, got {event.action!r}"
        )


def _insert_event(tx: Tx, event: UploadEvent) -> None:
    tx.execute(
        f"INSERT INTO uploads ({_EVENT}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.dataset,
            event.version,
            event.action,
            event.files,
            event.bytes,
            event.at,
            event.actor,
            event.detail,
        ),
    )
