"""The shared profile package: resource names, the store-backed profile store and its cache.

Every store test runs on both engines, a SQLite file and a real PostgreSQL
server (the ``store`` / ``store_url`` fixtures), through the `Store` the server uses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from assay.server.aigen.profiles import DETECTOR_PROFILES, DetectorProfile
from assay.server.errors import InvalidArgumentError, NotFoundError
from assay.server.ood.profiles import OOD_PROFILES, ModelProfile, ScorerEntry, profile_document
from assay.server.profiles import (
    NAME_RULE,
    ProfileFormat,
    ProfileKey,
    ProfileStore,
    UnreadableProfileError,
    check_name,
)
from assay.server.profiles.refresh import ProfileRefresher
from assay.server.profiles.store import Arrays, Document
from assay.server.store import open_store
from assay.server.store.base import Store
from assay.server.store.codec import pack_arrays, unpack_arrays


@dataclass(frozen=True)
class Toy:
    name: str
    version: str
    value: float
    weights: np.ndarray | None = None


def _dump(toy: Toy) -> tuple[Document, Arrays | None]:
    if not np.isfinite(toy.value):
        raise ValueError("value must be finite")
    arrays = None if toy.weights is None else {"weights": toy.weights}
    return {
        "schema": "toy/v1",
        "name": toy.name,
        "version": toy.version,
        "value": toy.value,
    }, arrays


def _parse(document: Document, arrays: Arrays | None) -> Toy:
    if document.get("schema") != "toy/v1":
        raise ValueError("not a toy")
    weights = None if arrays is None else arrays["weights"]
    return Toy(document["name"], document["version"], document["value"], weights)


TOYS = ProfileFormat[Toy](
    kind="toy",
    title="toy profile",
    owner="model",
    stem="toy",
    key=lambda t: (t.name, t.version),
    dump=_dump,
    parse=_parse,
)

BAD_NAMES = [
    "",
    "/etc/passwd",
    "..",
    ".",
    ".hidden",
    "a/b",
    "a\\b",
    "a\0b",
    "model\n",
    "x" * 129,
    "with space",
    "-dash-first",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n[:12]) for n in BAD_NAMES])
def test_check_name_refuses_paths_and_odd_names(name: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        check_name(name, "model name")
    message = str(info.value)
    assert message.startswith("model name ") and NAME_RULE in message
    assert len(message) < 40 + 60 + len(NAME_RULE)  # the input is truncated, never echoed whole


def test_check_name_accepts_registry_names_and_truncates_long_input() -> None:
    for name in ("resnet50", "digits_cnn", "v1.2-rc_3", "1", "x" * 128):
        assert check_name(name, "model name") == name
    with pytest.raises(InvalidArgumentError) as info:
        check_name("a/" * 10_000, "model name")
    assert len(str(info.value)) < 300 and "..." in str(info.value)
    with pytest.raises(InvalidArgumentError, match="of type int"):
        check_name(5, "model name")
    key = ProfileKey.of("ood", "m", "1", owner="detector")
    assert (key.kind, key.name, key.version) == ("ood", "m", "1")
    with pytest.raises(InvalidArgumentError, match="detector version"):
        ProfileKey.of("ood", "m", "../1", owner="detector")


class CountingStore:
    """A real store that counts the calls made through it (the hot path must make none)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return attribute(*args, **kwargs)

        return counted


def test_store_round_trip_listing_and_delete(store: Store) -> None:
    profiles = ProfileStore(store, TOYS)
    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert profiles.save(Toy("b", "2", 0.5, weights)) == ProfileKey("toy", "b", "2")
    profiles.save(Toy("a", "1", 0.25))
    profiles.save(Toy("b", "1", 1.5))
    (row,) = [e for e in store.profile_entries("toy") if (e.name, e.version) == ("b", "2")]
    stored = store.get_profile("toy", "b", "2")
    assert stored is not None and stored.blob is not None  # document and arrays: one row
    assert stored.entry.etag == row.etag and stored.document["value"] == 0.5
    np.testing.assert_array_equal(unpack_arrays(stored.blob)["weights"], weights)
    loaded = ProfileStore(store, TOYS).load("b", "2")  # another instance: nothing cached
    assert loaded is not None and loaded.value == 0.5 and loaded.weights is not None
    np.testing.assert_array_equal(loaded.weights, weights)
    assert loaded.weights.dtype == np.float32
    assert profiles.names() == ["a", "b"] and profiles.versions("b") == ["1", "2"]
    assert [(t.name, t.version) for t in profiles.all()] == [("a", "1"), ("b", "1"), ("b", "2")]
    assert [t.version for t in profiles.all("b")] == ["1", "2"]
    assert profiles.load("c", "1") is None and profiles.versions("c") == []
    # replacing a profile without arrays drops the old arrays with it
    profiles.save(Toy("b", "2", 0.75))
    replaced = store.get_profile("toy", "b", "2")
    assert replaced is not None and replaced.blob is None and replaced.entry.etag != row.etag
    reloaded = ProfileStore(store, TOYS).load("b", "2")
    assert reloaded is not None and reloaded.weights is None and reloaded.value == 0.75
    deleted = profiles.delete("b", "2")
    assert deleted.profile is not None and deleted.profile.value == 0.75 and not deleted.problem
    assert profiles.load("b", "2") is None
    with pytest.raises(NotFoundError, match="model 'b' version '2' has no toy profile"):
        profiles.delete("b", "2")
    assert store.get_profile("toy", "b", "2") is None and profiles.versions("b") == ["1"]


def test_delete_leaves_another_kind_with_the_same_name(store: Store) -> None:
    others = dataclasses.replace(TOYS, kind="other", stem="other")
    toys, other = ProfileStore(store, TOYS), ProfileStore(store, others)
    toys.save(Toy("m", "1", 0.5, np.ones(2)))
    other.save(Toy("m", "1", 2.0))
    toys.delete("m", "1")
    assert toys.load("m", "1") is None and toys.names() == []
    kept = other.load("m", "1")
    assert kept is not None and kept.value == 2.0 and other.names() == ["m"]


def test_store_refuses_bad_keys_before_touching_the_database(store: Store) -> None:
    counting = CountingStore(store)
    profiles = ProfileStore(counting, TOYS)  # type: ignore[arg-type]
    for name, version in (("../outside", "1"), ("/tmp", "1"), ("m", ".."), ("m", "1\n")):
        with pytest.raises(InvalidArgumentError, match="not valid"):
            profiles.load(name, version)
        with pytest.raises(InvalidArgumentError, match="not valid"):
            profiles.delete(name, version)
        with pytest.raises(InvalidArgumentError, match="not valid"):
            profiles.save(Toy(name, version, 1.0))
    with pytest.raises(InvalidArgumentError):
        profiles.versions("../outside")
    with pytest.raises(InvalidArgumentError):
        profiles.all("..")
    assert counting.calls == 0 and store.profile_entries("toy") == []


def test_unreadable_rows_are_listed_refused_with_a_remedy_and_deletable(store: Store) -> None:
    profiles = ProfileStore(store, TOYS)
    profiles.save(Toy("m", "1", 1.0))
    with pytest.raises(ValueError, match="value must be finite"):
        profiles.save(Toy("m", "2", float("nan")))
    assert profiles.versions("m") == ["1"]  # nothing written
    # rows another server wrote: a newer schema, arrays that are not an npz
    store.put_profile("toy", "m", "3", {"schema": "toy/v2"}, None)
    store.put_profile("toy", "m", "4", {"schema": "toy/v1"}, b"not an npz archive")
    with pytest.raises(UnreadableProfileError) as refused:
        profiles.load("m", "3")
    message = str(refused.value)
    assert "toy profile of model 'm' version '3' is unreadable: not a toy" in message
    assert message.endswith("refit it, or delete it")
    listed = profiles.listing(profiles.entries("m"))
    assert [(s.key.version, s.profile is not None, s.problem[:11]) for s in listed] == [
        ("1", True, ""),
        ("3", False, "unreadable:"),
        ("4", False, "unreadable:"),
    ]
    assert [t.version for t in profiles.all()] == ["1"]  # the readable ones
    damaged = profiles.delete("m", "4").problem
    assert damaged == "unreadable: its arrays are not a plain .npz archive"  # no unpickling hint
    assert profiles.delete("m", "3").problem == "unreadable: not a toy"
    assert profiles.versions("m") == ["1"]


async def test_a_cached_profile_is_served_without_a_database_call(store: Store) -> None:
    counting = CountingStore(store)
    profiles = ProfileStore(counting, TOYS)  # type: ignore[arg-type]
    ProfileStore(store, TOYS).save(Toy("m", "1", 1.0, np.ones(3)))
    store.put_profile("toy", "m", "2", {"schema": "toy/v0"}, None)
    first = await profiles.get("m", "1")
    assert first is not None and counting.calls > 0
    assert await profiles.get("m", "9") is None  # a missing profile is remembered too
    with pytest.raises(UnreadableProfileError):
        await profiles.get("m", "2")
    before = counting.calls
    for _ in range(100):
        assert await profiles.get("m", "1") is first
        assert await profiles.get("m", "9") is None
        with pytest.raises(UnreadableProfileError, match="unreadable: not a toy"):
            await profiles.get("m", "2")
    assert counting.calls == before
    listed = profiles.listing(store.profile_entries("toy"))  # unchanged etags: nothing re-read
    assert [s.profile is first for s in listed] == [True, False] and counting.calls == before
    assert await profiles.refresh() == 0 and counting.calls == before + 1  # one cheap listing


def test_load_rereads_only_a_replaced_profile(store: Store) -> None:
    profiles, other = ProfileStore(store, TOYS), ProfileStore(store, TOYS)
    profiles.save(Toy("m", "1", 1.0))
    first = profiles.load("m", "1")
    assert first is not None and first is profiles.load("m", "1")  # same etag: not parsed again
    other.save(Toy("m", "1", 2.5))
    again = profiles.load("m", "1")
    assert again is not None and again.value == 2.5


async def _eventually(
    read: Callable[[], Any], check: Callable[[Any], bool], within_s: float
) -> Any:
    """Polls an async read until ``check`` holds; fails after ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        value = await read()
        if check(value):
            return value
        assert time.monotonic() < deadline, f"still {value!r} after {within_s} s"
        await asyncio.sleep(0.01)


async def test_another_replica_sees_fits_replacements_and_deletes_within_the_interval(
    store_url: str,
) -> None:
    interval = 0.2
    first, second = open_store(store_url), open_store(store_url)  # two replicas, one database
    a, b = ProfileStore(first, TOYS), ProfileStore(second, TOYS)
    refresher = ProfileRefresher([b], interval)
    refresher.start()
    try:
        assert await b.get("m", "1") is None  # cached as missing
        await a.asave(Toy("m", "1", 1.0))
        start = time.monotonic()
        fitted = await _eventually(lambda: b.get("m", "1"), lambda t: t is not None, 5.0)
        assert fitted.value == 1.0
        await a.asave(Toy("m", "1", 2.0))  # replaced elsewhere: a new etag
        await _eventually(lambda: b.get("m", "1"), lambda t: t.value == 2.0, 5.0)
        await a.adelete("m", "1")
        await _eventually(lambda: b.get("m", "1"), lambda t: t is None, 5.0)
        # three changes seen, each within about one interval (a slow machine gets slack)
        assert time.monotonic() - start < 3 * (interval + 1.0)
    finally:
        await refresher.stop()
        first.close()
        second.close()


def test_store_format_names_are_checked(store: Store) -> None:
    with pytest.raises(InvalidArgumentError, match="profile file stem"):
        ProfileStore(store, ProfileFormat[Toy]("toy", "t", "model", "../toy", *_fns()))
    with pytest.raises(InvalidArgumentError, match="profile kind"):
        ProfileStore(store, ProfileFormat[Toy]("a/b", "t", "model", "toy", *_fns()))


def _fns() -> tuple[Any, Any, Any]:
    return TOYS.key, TOYS.dump, TOYS.parse


def test_ood_profiles_keep_their_arrays_digest_and_scorer_order(store: Store) -> None:
    holdout = np.linspace(0.0, 1.0, 11)
    scorers = {
        name: ScorerEntry("energy", None, 0.8, holdout, {"temperature": t})
        for name, t in (("energy_t2", 2.0), ("e", 1.0), ("energy", 1.5))
    }
    profile = ModelProfile("resnet", "3", "sha256:ab", 0.9, scorers)
    profiles = ProfileStore(store, OOD_PROFILES)
    profiles.save(profile)
    loaded = ProfileStore(store, OOD_PROFILES).load("resnet", "3")
    assert loaded is not None and list(loaded.scorers) == ["energy_t2", "e", "energy"]
    np.testing.assert_array_equal(loaded.scorers["e"].holdout_scores, holdout)
    # a row whose arrays do not match its document is refused, and says how to fix it
    document, _ = profile_document(profile)
    other = ModelProfile("resnet", "3", "sha256:ab", 0.9, {"e": scorers["e"]})
    _, arrays = profile_document(other)
    store.put_profile("ood", "resnet", "3", document, pack_arrays(arrays))
    with pytest.raises(UnreadableProfileError) as refused:
        ProfileStore(store, OOD_PROFILES).load("resnet", "3")
    assert "arrays_sha256" in str(refused.value) and "FitProfile" in str(refused.value)
    with pytest.raises(NotFoundError, match="no OOD profile"):
        profiles.delete("resnet", "4")


def test_detector_profiles_without_a_spectrum_have_no_arrays(store: Store) -> None:
    profile = DetectorProfile(
        "det", "1", "sha256:cd", 0.6, 0.05, 0.04, 0.05, 0.9, 0.9, 0.95, 9, 9, 1.0
    )
    profiles = ProfileStore(store, DETECTOR_PROFILES)
    profiles.save(profile)
    stored = store.get_profile("aigen", "det", "1")
    assert stored is not None and stored.blob is None
    assert ProfileStore(store, DETECTOR_PROFILES).load("det", "1") == profile
    with pytest.raises(NotFoundError, match="detector 'det' version '2' has no detector profile"):
        profiles.delete("det", "2")
