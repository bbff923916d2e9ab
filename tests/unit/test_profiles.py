"""The shared profile package: resource names, the generic store, the fingerprint."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assay.server.aigen.profiles import DETECTOR_PROFILES, DetectorProfile
from assay.server.errors import InvalidArgumentError, NotFoundError
from assay.server.ood.profiles import OOD_PROFILES, ModelProfile, ScorerEntry, load_profile
from assay.server.profiles import NAME_RULE, ProfileFormat, ProfileKey, ProfileStore, check_name
from assay.server.profiles.store import Arrays, Document


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


def test_store_round_trip_listing_and_delete(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path, TOYS)
    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert store.save(Toy("b", "2", 0.5, weights)) == ProfileKey("toy", "b", "2")
    store.save(Toy("a", "1", 0.25))
    store.save(Toy("b", "1", 1.5))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "toy.json",
        "toy.json",
        "toy.json",
        "toy.npz",
    ]
    loaded = ProfileStore(tmp_path, TOYS).load("b", "2")
    assert loaded is not None and loaded.value == 0.5 and loaded.weights is not None
    np.testing.assert_array_equal(loaded.weights, weights)
    assert loaded.weights.dtype == np.float32
    assert store.names() == ["a", "b"] and store.versions("b") == ["1", "2"]
    assert [(t.name, t.version) for t in store.all()] == [("a", "1"), ("b", "1"), ("b", "2")]
    assert [t.version for t in store.all("b")] == ["1", "2"]
    assert store.load("c", "1") is None and store.versions("c") == []
    # replacing a profile without arrays removes the old npz
    store.save(Toy("b", "2", 0.75))
    assert not (tmp_path / "b" / "2" / "toy.npz").exists()
    reloaded = store.load("b", "2")
    assert reloaded is not None and reloaded.weights is None and reloaded.value == 0.75
    assert store.delete("b", "2").value == 0.75 and store.load("b", "2") is None
    with pytest.raises(NotFoundError, match="model 'b' version '2' has no toy profile"):
        store.delete("b", "2")
    assert not (tmp_path / "b" / "2").exists() and store.versions("b") == ["1"]


def test_delete_leaves_another_kind_sharing_the_folder(tmp_path: Path) -> None:
    others = dataclasses.replace(TOYS, kind="other", stem="other")
    toys, other = ProfileStore(tmp_path, TOYS), ProfileStore(tmp_path, others)
    toys.save(Toy("m", "1", 0.5, np.ones(2)))
    other.save(Toy("m", "1", 2.0))
    toys.delete("m", "1")
    assert toys.load("m", "1") is None
    kept = other.load("m", "1")
    assert kept is not None and kept.value == 2.0
    other.delete("m", "1")
    assert not (tmp_path / "m").exists()  # the emptied folders go too


def test_store_refuses_bad_keys_before_touching_the_disk(tmp_path: Path) -> None:
    root = tmp_path / "store"
    outside = tmp_path / "outside" / "1"
    outside.mkdir(parents=True)
    (outside / "toy.json").write_text(json.dumps({"schema": "toy/v1"}))
    store = ProfileStore(root, TOYS)
    for name, version in (("../outside", "1"), ("/tmp", "1"), ("m", ".."), ("m", "1\n")):
        with pytest.raises(InvalidArgumentError, match="not valid"):
            store.load(name, version)
        with pytest.raises(InvalidArgumentError, match="not valid"):
            store.delete(name, version)
        with pytest.raises(InvalidArgumentError, match="not valid"):
            store.save(Toy(name, version, 1.0))
    with pytest.raises(InvalidArgumentError):
        store.versions("../outside")
    with pytest.raises(InvalidArgumentError):
        store.all("..")
    assert (outside / "toy.json").exists() and not root.exists()


def test_store_skips_junk_and_refuses_invalid_profiles(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path, TOYS)
    store.save(Toy("m", "1", 1.0))
    (tmp_path / ".tmp-folder").mkdir()
    (tmp_path / "m" / "no-profile").mkdir()
    (tmp_path / "m" / ".odd").mkdir()
    (tmp_path / "m" / ".odd" / "toy.json").write_text("{}")
    assert store.names() == ["m"] and store.versions("m") == ["1"]
    with pytest.raises(ValueError, match="value must be finite"):
        store.save(Toy("m", "2", float("nan")))
    assert not (tmp_path / "m" / "2" / "toy.json").exists()
    path = tmp_path / "m" / "1" / "toy.json"
    path.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="not a toy"):
        store.load("m", "1")
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        store.load("m", "1")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        store.load("m", "1")


def test_store_cache_reloads_a_rewritten_file(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path, TOYS)
    store.save(Toy("m", "1", 1.0))
    first = store.load("m", "1")
    assert first is store.load("m", "1")  # cached
    path = tmp_path / "m" / "1" / "toy.json"
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "value": 2.5}))  # same inode, same second maybe
    again = store.load("m", "1")
    assert again is not None and again.value == 2.5


def test_store_format_names_are_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="profile file stem"):
        ProfileStore(Path("x"), ProfileFormat[Toy]("toy", "t", "model", "../toy", *_fns()))
    with pytest.raises(InvalidArgumentError, match="profile kind"):
        ProfileStore(Path("x"), ProfileFormat[Toy]("a/b", "t", "model", "toy", *_fns()))


def _fns() -> tuple[Any, Any, Any]:
    return TOYS.key, TOYS.dump, TOYS.parse


def test_ood_profiles_keep_their_layout_and_arrays_digest(tmp_path: Path) -> None:
    holdout = np.linspace(0.0, 1.0, 11)
    profile = ModelProfile(
        "resnet", "3", "sha256:ab", 0.9, {"energy": ScorerEntry("energy", None, 0.8, holdout)}
    )
    store = ProfileStore(tmp_path, OOD_PROFILES)
    store.save(profile)
    stem = tmp_path / "resnet" / "3" / "profile"
    assert stem.with_suffix(".npz").exists() and stem.with_suffix(".json").exists()
    # the free functions read what the store wrote: one on-disk format
    direct = load_profile(stem)
    np.testing.assert_array_equal(direct.scorers["energy"].holdout_scores, holdout)
    loaded = store.load("resnet", "3")
    assert loaded is not None and loaded.scorers["energy"].threshold == 0.8
    stem.with_suffix(".npz").unlink()
    with pytest.raises(ValueError, match="no array file"):
        ProfileStore(tmp_path, OOD_PROFILES).load("resnet", "3")
    with pytest.raises(NotFoundError, match="no OOD profile"):
        store.delete("resnet", "4")


def test_detector_profiles_without_a_spectrum_have_no_npz(tmp_path: Path) -> None:
    profile = DetectorProfile(
        "det", "1", "sha256:cd", 0.6, 0.05, 0.04, 0.05, 0.9, 0.9, 0.95, 9, 9, 1.0
    )
    store = ProfileStore(tmp_path, DETECTOR_PROFILES)
    store.save(profile)
    folder = tmp_path / "det" / "1"
    assert sorted(p.name for p in folder.iterdir()) == ["detector.json"]
    assert store.load("det", "1") == profile
    with pytest.raises(NotFoundError, match="detector 'det' version '2' has no detector profile"):
        store.delete("det", "2")
