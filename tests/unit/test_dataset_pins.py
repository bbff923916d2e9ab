"""Pinning a job's uploaded datasets to the version shown at Start (real folders, real specs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from assay.server.dataset_folders import VERSIONS, UploadsFolder
from assay.server.dataset_pins import DatasetPins, link_path
from assay.server.errors import InvalidArgumentError
from assay.server.ood.specs import OodEvaluationSpec
from assay.server.robustness.specs import RobustnessSpec


def publish(folder: UploadsFolder, name: str, files: dict[str, bytes]) -> str:
    staged = folder.stage()
    for relative, data in files.items():
        (staged.path / relative).parent.mkdir(parents=True, exist_ok=True)
        (staged.path / relative).write_bytes(data)
    folder.publish(name, staged, replace=True)
    staged.release()
    return staged.version


@pytest.fixture
def uploads(tmp_path: Path) -> UploadsFolder:
    return UploadsFolder(tmp_path / "data" / "datasets")


def test_every_dataset_field_is_pinned_and_other_paths_stay(
    uploads: UploadsFolder, tmp_path: Path
) -> None:
    first = publish(uploads, "in", {"a/1.png": b"1", "list.jsonl": b"{}"})
    svhn = publish(uploads, "svhn", {"b/1.png": b"2"})
    elsewhere = str(tmp_path / "roots" / "cifar")
    spec = OodEvaluationSpec(
        model="m",
        in_dataset=f"{uploads.root}/in/list.jsonl",  # a manifest through the link
        ood_datasets=(f"{uploads.root}/svhn", elsewhere),
    )
    pinned = DatasetPins(uploads).pin(spec)
    root = uploads.root
    assert pinned.in_dataset == str(root / VERSIONS / "in" / first / "list.jsonl")
    assert pinned.ood_datasets == (str(root / VERSIONS / "svhn" / svhn), elsewhere)
    assert (pinned.model, pinned.scorers) == (spec.model, spec.scorers)
    publish(uploads, "in", {"a/2.png": b"new"})  # a replace leaves the pinned spec as it was
    assert DatasetPins(uploads).pin(pinned) == pinned


def test_plain_folders_missing_names_and_other_strings_are_left_alone(
    uploads: UploadsFolder,
) -> None:
    (uploads.root / "legacy" / "cat").mkdir(parents=True)  # not adopted into versions yet
    spec = RobustnessSpec(
        model="m", dataset=str(uploads.root / "legacy"), overrides={"sample_limit": 5}
    )
    assert DatasetPins(uploads).pin(spec) is spec
    missing = RobustnessSpec(model="m", dataset=str(uploads.root / "nothing"))
    assert DatasetPins(uploads).pin(missing) is missing


def test_a_root_given_relative_or_through_a_symlink_still_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    folder = UploadsFolder(Path("alias") / "datasets")
    version = publish(folder, "d", {"x.png": b"1"})
    pins = DatasetPins(folder)
    for given, root in [
        ("alias/datasets/d", Path("alias/datasets")),  # as configured (relative)
        (str(tmp_path / "alias/datasets/d"), tmp_path / "alias/datasets"),  # absolute
        (str(real / "datasets/./d/"), real / "datasets"),  # resolved, not normalised
    ]:
        spec = pins.pin(RobustnessSpec(model="m", dataset=given))
        assert spec.dataset == str(root / VERSIONS / "d" / version), given


def test_versions_in_use_and_names_read_stored_specs(uploads: UploadsFolder) -> None:
    root = uploads.root
    specs = [
        {"dataset": f"{root}/{VERSIONS}/d/v1/manifest.csv", "model": "m"},
        {"in_dataset": "/elsewhere/d", "ood_datasets": [f"{root}/{VERSIONS}/e/v7"]},
        {"dataset": f"{root}/d"},  # an unpinned spec (stored before pinning) follows the link
    ]
    pins = DatasetPins(uploads)
    assert pins.versions_in_use(specs) == {"d": {"v1"}, "e": {"v7"}}
    assert pins.names(specs[0], "d") and pins.names(specs[2], "d")
    assert pins.names(specs[1], "e") and not pins.names(specs[1], "d")


def test_a_pinned_path_too_long_for_the_spec_is_invalid_argument(uploads: UploadsFolder) -> None:
    publish(uploads, "d", {"x.png": b"1"})
    deep = f"{uploads.root}/d/" + "x" * (4096 - len(str(uploads.root)) - 3)
    with pytest.raises(InvalidArgumentError, match="pinned"):
        DatasetPins(uploads).pin(RobustnessSpec(model="m", dataset=deep))


def test_link_path_names_a_pinned_version_by_its_dataset() -> None:
    assert link_path(f"/u/{VERSIONS}/svhn/0001-ab") == "/u/svhn"
    assert link_path(f"/u/{VERSIONS}/svhn/0001-ab/ood") == "/u/svhn/ood"
    assert link_path("/roots/cifar") == "/roots/cifar"
    assert os.path.basename(link_path(f"rel/{VERSIONS}/x/v")) == "x"
