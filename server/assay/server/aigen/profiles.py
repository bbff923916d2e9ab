"""Detector profiles: a calibrated threshold and a real-photo spectrum, per detector version.

A JSON document (schema ``assay.aigen.profile/v1``) plus, when a spectral
profile was fitted, its arrays; the shared `assay.server.profiles.ProfileStore`
keeps both in one row per detector version, in the `DETECTOR_PROFILES` format
(legacy files: ``<root>/<detector>/<version>/detector.{json,npz}``). No
pickle; floats are written with Python's shortest round-trip repr, so a
save/load round trip is exact. Like OOD profiles, a profile is bound to the
detector's fingerprint (its outputs on a fixed probe): changed weights make it
refuse to load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from assay.server.aigen.spectral import SpectralProfile
from assay.server.profiles.store import Arrays, Document, ProfileFormat

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


def detector_document(profile: DetectorProfile) -> tuple[Document, Arrays | None]:
    """The JSON document and, with a spectral profile, its arrays (``mean``, ``std``)."""
    arrays = None
    if profile.spectral is not None:
        spectral = profile.spectral.to_arrays()
        arrays = {"mean": spectral["mean"], "std": spectral["std"]}
    return profile.to_json(), arrays


DETECTOR_PROFILES: Final = ProfileFormat[DetectorProfile](
    kind="aigen",
    title="detector profile",
    owner="detector",
    stem="detector",
    key=lambda profile: (profile.detector, profile.version),
    dump=detector_document,
    parse=DetectorProfile.from_json,
    remedy=(
        "refit it (FitDetector, `assay aigen fit`) or delete it "
        "(DeleteDetectorProfile, `assay aigen delete-profile`)"
    ),
)
"""How the shared profile store keeps detector profiles, one per detector version."""
