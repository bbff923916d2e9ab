"""The Store contract for profiles, dataset metadata and the upload log, on both engines."""

from __future__ import annotations

import io

import numpy as np
import pytest

from assay.server.errors import InvalidArgumentError
from assay.server.store import DatasetRecord, ProfileEntry, Store, UploadEvent
from assay.server.store.codec import pack_arrays, unpack_arrays


def npz(**arrays: np.ndarray) -> bytes:
    return pack_arrays(arrays)


def test_profile_round_trip_with_its_blob(store: Store) -> None:
    arrays = {
        "mean": np.random.default_rng(0).random((3, 64), dtype=np.float32),
        "threshold": np.array(0.25),
    }
    blob = npz(**arrays)
    document = {"format": "assay.ood.profile/v1", "scorer": "mahalanobis", "tpr": 0.95}
    entry = store.put_profile("ood", "resnet", "1", document, blob)
    assert (entry.kind, entry.name, entry.version) == ("ood", "resnet", "1")
    assert entry.size_bytes == len(blob) + len(
        b'{"format": "assay.ood.profile/v1", "scorer": "mahalanobis", "tpr": 0.95}'
    )
    stored = store.get_profile("ood", "resnet", "1")
    assert stored is not None and stored.entry == entry
    assert stored.document == document and stored.blob == blob
    back = unpack_arrays(stored.blob)
    for name, original in arrays.items():
        assert back[name].dtype == original.dtype
        np.testing.assert_array_equal(back[name], original)
    assert store.get_profile("ood", "resnet", "2") is None
    assert store.get_profile("anomaly", "resnet", "1") is None


def test_replacing_a_profile_changes_its_etag_and_all_of_it(store: Store) -> None:
    first = store.put_profile("aigen", "det", "1", {"v": 1}, npz(x=np.zeros(2)))
    second = store.put_profile("aigen", "det", "1", {"v": 2}, None)
    assert second.etag != first.etag and second.updated_at >= first.updated_at
    stored = store.get_profile("aigen", "det", "1")
    assert stored is not None
    assert (stored.document, stored.blob, stored.entry) == ({"v": 2}, None, second)
    assert store.profile_entries("aigen") == [second]


def test_profile_entries_by_kind_and_name_in_order(store: Store) -> None:
    made = [
        store.put_profile("ood", name, version, {"n": name}, b"")
        for name, version in (("b", "2"), ("a", "1"), ("b", "1"))
    ]
    store.put_profile("anomaly", "a", "1", {}, None)
    entries = store.profile_entries("ood")
    assert [(e.name, e.version) for e in entries] == [("a", "1"), ("b", "1"), ("b", "2")]
    assert all(isinstance(e, ProfileEntry) for e in entries)
    assert {e.etag for e in entries} == {e.etag for e in made}
    assert [(e.name, e.version) for e in store.profile_entries("ood", "b")] == [
        ("b", "1"),
        ("b", "2"),
    ]
    assert store.profile_entries("ood", "zzz") == [] and store.profile_entries("none") == []
    assert store.get_profile("ood", "a", "1") is not None
    empty = store.get_profile("ood", "a", "1")
    assert empty is not None and empty.blob == b""  # An empty blob is not "no blob".


def test_delete_profile(store: Store) -> None:
    store.put_profile("ood", "m", "1", {}, b"x")
    assert store.delete_profile("ood", "m", "1") is True
    assert store.delete_profile("ood", "m", "1") is False
    assert store.get_profile("ood", "m", "1") is None and store.profile_entries("ood") == []


def test_profile_arguments_are_checked(store: Store) -> None:
    with pytest.raises(InvalidArgumentError, match="name"):
        store.put_profile("ood", "", "1", {}, None)
    with pytest.raises(InvalidArgumentError, match="strict JSON"):
        store.put_profile("ood", "m", "1", {"t": float("nan")}, None)
    assert store.profile_entries("ood") == []


def test_a_profile_blob_is_never_unpickled_by_the_codec(store: Store) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, evil=np.array([object()], dtype=object))
    store.put_profile("ood", "m", "1", {}, buffer.getvalue())  # The store keeps bytes as given.
    stored = store.get_profile("ood", "m", "1")
    assert stored is not None and stored.blob is not None
    with pytest.raises(ValueError, match="allow_pickle"):
        unpack_arrays(stored.blob)


def event(dataset: str, action: str, at: float, version: str = "v1") -> UploadEvent:
    return UploadEvent(dataset, version, action, 3, 300, at, "10.0.0.1", "")


def test_datasets_and_their_upload_log(store: Store) -> None:
    first = DatasetRecord("cats", "v1", 3, 300, 10.0, "alice")
    store.put_dataset(first, event("cats", "created", 10.0))
    store.put_dataset(DatasetRecord("dogs", "v1", 1, 10, 11.0, "bob"), event("dogs", "created", 11))
    replaced = DatasetRecord("cats", "v2", 5, 500, 12.0, "carol")
    store.put_dataset(replaced, event("cats", "replaced", 12.0, "v2"))
    failed = UploadEvent("cats", "v3", "failed", 0, 0, 13.0, "dave", "checksum mismatch")
    store.log_upload(failed)

    assert store.dataset("cats") == replaced and store.dataset("none") is None
    assert [d.name for d in store.datasets()] == ["cats", "dogs"]
    log = store.upload_log()
    assert [(e.dataset, e.action) for e in log] == [
        ("cats", "failed"),
        ("cats", "replaced"),
        ("dogs", "created"),
        ("cats", "created"),
    ]
    assert log[0] == failed
    assert [e.version for e in store.upload_log("cats", limit=2)] == ["v3", "v2"]

    assert store.delete_dataset("cats", event("cats", "deleted", 14.0, "v2")) is True
    assert store.delete_dataset("cats", event("cats", "deleted", 15.0, "v2")) is False
    assert store.dataset("cats") is None and [d.name for d in store.datasets()] == ["dogs"]
    assert [e.action for e in store.upload_log("cats")] == [
        "deleted",
        "failed",
        "replaced",
        "created",
    ]


def test_upload_log_ties_keep_their_order_and_bad_events_are_refused(store: Store) -> None:
    for version in ("a", "b", "c"):
        store.log_upload(event("d", "failed", 5.0, version))
    assert [e.version for e in store.upload_log("d")] == ["c", "b", "a"]
    with pytest.raises(InvalidArgumentError, match="upload action"):
        store.log_upload(event("d", "exploded", 6.0))
    with pytest.raises(InvalidArgumentError, match="limit"):
        store.upload_log(limit=0)
    assert len(store.upload_log()) == 3
