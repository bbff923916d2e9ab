"""Detector profiles: a calibrated threshold and a real-photo spectrum, per detector version.

Stored as ``<root>/<detector>/<version>/detector.json`` (schema
``assay.aigen.profile/v1``) plus ``detector.npz`` with the spectral profile's
arrays when one was fitted. No pickle; floats are written with Python's
shortest round-trip repr, so a save/load round trip is exact. Like OOD
profiles, a profile is bound to the detector's fingerprint (its outputs on a
fixed probe): changed weights make it refuse to load.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assay.server.aigen.spectral import SpectralProfile
from assay.server.errors import NotFoundError

SCHEMA = "assay.aigen.profile/v1"


@dataclass(frozen=True)
class DetectorProfile:
    """What a fit learned about one detector version on the caller's data."""

    detector: str
    version: str
    fingerprint: str
    threshold: float
    """Decision threshold on the pooled probability ("generated" iff p >= threshold)."""
    target_fpr: float
    calibration_fpr: float
    holdout_fpr: float
    holdout_tpr: float
    holdout_ap: float
    holdout_auroc: float
    real_images: int
    generated_images: int
    created_at: float
    spectral: SpectralProfile | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON document (spectral arrays go to the npz)."""
        return {
            "schema": SCHEMA,
            "detector": {
                "name": self.detector,
                "version": self.version,
                "fingerprint": self.fingerprint,
            },
            "threshold": self.threshold,
            "target_fpr": self.target_fpr,
            "calibration_fpr": self.calibration_fpr,
            "holdout": {
                "fpr": self.holdout_fpr,
                "tpr": self.holdout_tpr,
                "ap": self.holdout_ap,
                "auroc": self.holdout_auroc,
            },
            "images": {"real": self.real_images, "generated": self.generated_images},
            "created_at": self.created_at,
            "spectral": self.spectral.meta() if self.spectral else None,
        }

    @classmethod
    def from_json(
        cls, document: dict[str, Any], arrays: dict[str, np.ndarray] | None
    ) -> DetectorProfile:
        """Rebuild from :meth:`to_json` and the npz arrays; ValueError when invalid."""
        if document.get("schema") != SCHEMA:
            raise ValueError(f"expected schema {SCHEMA!r}, got {document.get('schema')!r}")
        try:
            detector, holdout, images = (
                document["detector"],
                document["holdout"],
                document["images"],
            )
            spectral = None
            if document.get("spectral") is not None:
                if arrays is None:
                    raise ValueError("the profile names a spectral profile but has no arrays")
                spectral = SpectralProfile.from_arrays(arrays, document["spectral"])
            return cls(
                detector=str(detector["name"]),
                version=str(detector["version"]),
                fingerprint=str(detector["fingerprint"]),
                threshold=float(document["threshold"]),
                target_fpr=float(document["target_fpr"]),
                calibration_fpr=float(document["calibration_fpr"]),
                holdout_fpr=float(holdout["fpr"]),
                holdout_tpr=float(holdout["tpr"]),
                holdout_ap=float(holdout["ap"]),
                holdout_auroc=float(holdout["auroc"]),
                real_images=int(images["real"]),
                generated_images=int(images["generated"]),
                created_at=float(document["created_at"]),
                spectral=spectral,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"detector profile is missing or mistypes {exc}") from None


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DetectorProfileStore:
    """Detector profiles on disk, one per detector version, cached by mtime."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[tuple[str, str], tuple[float, DetectorProfile]] = {}

    def _folder(self, detector: str, version: str) -> Path:
        return self.root / detector / version

    def save(self, profile: DetectorProfile) -> None:
        """Write (or replace) the profile of its detector version; npz first, JSON last."""
        folder = self._folder(profile.detector, profile.version)
        folder.mkdir(parents=True, exist_ok=True)
        npz = folder / "detector.npz"
        if profile.spectral is not None:
            arrays = profile.spectral.to_arrays()
            _atomic_write(npz, lambda h: np.savez(h, mean=arrays["mean"], std=arrays["std"]))
        else:
            npz.unlink(missing_ok=True)
        text = json.dumps(profile.to_json(), indent=2, sort_keys=True).encode()
        _atomic_write(folder / "detector.json", lambda h: h.write(text))

    def load(self, detector: str, version: str) -> DetectorProfile | None:
        """The stored profile or None; reloaded when the file changed."""
        path = self._folder(detector, version) / "detector.json"
        if not path.exists():
            return None
        mtime = path.stat().st_mtime
        cached = self._cache.get((detector, version))
        if cached is None or cached[0] != mtime:
            document = json.loads(path.read_text(encoding="utf-8"))
            arrays = None
            npz = path.with_suffix(".npz")
            if npz.exists():
                with np.load(npz, allow_pickle=False) as data:
                    arrays = {k: data[k] for k in data.files}
            cached = (mtime, DetectorProfile.from_json(document, arrays))
            self._cache[(detector, version)] = cached
        return cached[1]

    def versions(self, detector: str) -> list[str]:
        """Versions of a detector that have a profile."""
        folder = self.root / detector
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / "detector.json").exists())

    def all(self, detector: str | None = None) -> list[DetectorProfile]:
        """Every stored profile (of one detector)."""
        names = (
            [detector] if detector else sorted(p.name for p in self.root.glob("*") if p.is_dir())
        )
        found = [self.load(n, v) for n in names for v in self.versions(n)]
        return [p for p in found if p is not None]

    def delete(self, detector: str, version: str) -> DetectorProfile:
        """Remove a profile; NotFoundError when there is none."""
        profile = self.load(detector, version)
        if profile is None:
            raise NotFoundError(f"detector {detector!r} version {version!r} has no profile")
        shutil.rmtree(self._folder(detector, version))
        self._cache.pop((detector, version), None)
        return profile
