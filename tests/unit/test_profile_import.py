"""Profiles left on disk by servers before the store are imported once, then moved aside."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from assay.server.aigen.profiles import DETECTOR_PROFILES, DetectorProfile, detector_document
from assay.server.ood.profiles import OOD_PROFILES, ModelProfile, ScorerEntry, save_profile
from assay.server.profiles import ProfileStore
from assay.server.profiles.legacy import import_folder, import_legacy, write_files
from assay.server.store.base import Store


def _ood(version: str, threshold: float, scores: int = 7) -> ModelProfile:
    holdout = np.linspace(0.0, 1.0, scores)
    return ModelProfile(
        "digits",
        version,
        "sha256:ab",
        0.95,
        {"energy": ScorerEntry("energy", None, threshold, holdout)},
    )


def test_legacy_profiles_are_imported_once_and_the_folder_moved_aside(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    legacy = tmp_path / "profiles"
    for version, threshold in (("1", 0.5), ("2", 0.25)):
        (legacy / "digits" / version).mkdir(parents=True)
        save_profile(legacy / "digits" / version / "profile", _ood(version, threshold))
    (legacy / "digits" / "3").mkdir()
    (legacy / "digits" / "3" / "profile.json").write_text("{torn")  # not even JSON
    (legacy / "digits" / "4").mkdir()  # a torn pair: arrays of another profile
    save_profile(legacy / "digits" / "4" / "profile", _ood("4", 0.5))
    save_profile(legacy / "digits" / "4" / "other", _ood("4", 0.5, scores=9))
    (legacy / "digits" / "4" / "other.npz").replace(legacy / "digits" / "4" / "profile.npz")
    (legacy / ".odd" / "1").mkdir(parents=True)  # not a valid name: ignored
    (legacy / ".odd" / "1" / "profile.json").write_text("{}")
    profiles = ProfileStore(store, OOD_PROFILES)
    profiles.save(_ood("2", 0.75))  # the store's copy wins over the file

    with caplog.at_level(logging.INFO, logger="assay.server.profiles.legacy"):
        import_legacy(store, {legacy: OOD_PROFILES, tmp_path / "aigen_profiles": DETECTOR_PROFILES})

    assert not legacy.exists() and (tmp_path / "profiles.imported" / "digits" / "3").is_dir()
    assert profiles.versions("digits") == ["1", "2", "4"]
    first, kept = profiles.load("digits", "1"), profiles.load("digits", "2")
    assert first is not None and first.scorers["energy"].threshold == 0.5
    assert kept is not None and kept.scorers["energy"].threshold == 0.75
    (torn,) = [s for s in profiles.listing(profiles.entries("digits")) if s.key.version == "4"]
    assert torn.profile is None and "arrays_sha256" in torn.problem  # listed, deletable
    text = caplog.text
    assert "imported 2 OOD profile(s)" in text and "digits/1, digits/4" in text
    assert "1 already there" in text and "digits/3" in text and "profiles.imported" in text
    # nothing is imported twice: the folder is gone, and a new one goes beside the first
    profiles.delete("digits", "1")
    import_legacy(store, {legacy: OOD_PROFILES})
    assert profiles.versions("digits") == ["2", "4"]


def test_detector_profiles_import_with_and_without_arrays(store: Store, tmp_path: Path) -> None:
    legacy = tmp_path / "aigen_profiles"
    profile = DetectorProfile(
        "det", "1", "sha256:cd", 0.6, 0.05, 0.04, 0.05, 0.9, 0.9, 0.95, 9, 9, 1.0
    )
    (legacy / "det" / "1").mkdir(parents=True)
    write_files(legacy / "det" / "1" / "detector", *detector_document(profile))
    (tmp_path / "aigen_profiles.imported").mkdir()  # an earlier import's folder stays
    result = import_folder(store, legacy, DETECTOR_PROFILES)
    assert result.imported == ["det/1"] and result.failed == [] and result.kept == []
    assert result.moved_to == tmp_path / "aigen_profiles.imported.2"
    assert ProfileStore(store, DETECTOR_PROFILES).load("det", "1") == profile
    stored = store.get_profile("aigen", "det", "1")
    assert stored is not None and stored.blob is None
    assert import_folder(store, legacy, DETECTOR_PROFILES).moved_to is None  # nothing left
