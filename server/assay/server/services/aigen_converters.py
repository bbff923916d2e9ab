"""AigenService messages <-> domain results (used by AigenService and Predict's signal)."""

from __future__ import annotations

from assay.server.aigen.profiles import DetectorProfile
from assay.server.aigen.verdicts import DetectorVerdict, ImageVerdict, StabilityReport
from assay.server.profiles import Stored
from assay.server.services.mirror import mirrored
from assay.server.services.timestamps import timestamp
from assay.v1 import aigen_pb2, common_pb2

VERDICTS = {
    "REAL": aigen_pb2.AIGEN_VERDICT_REAL,
    "GENERATED": aigen_pb2.AIGEN_VERDICT_GENERATED,
    "UNSURE": aigen_pb2.AIGEN_VERDICT_UNSURE,
}


def detector_to_proto(verdict: DetectorVerdict) -> aigen_pb2.DetectorScore:
    """DetectorVerdict -> DetectorScore (its crops included)."""
    return mirrored(
        aigen_pb2.DetectorScore,
        verdict,
        detector=common_pb2.ModelRef(name=verdict.detector, version=verdict.version),
        crops=[mirrored(aigen_pb2.CropScore, crop) for crop in verdict.crops],
    )


def stability_to_proto(report: StabilityReport | None) -> aigen_pb2.Stability | None:
    """StabilityReport -> Stability (None stays None: the field is left unset)."""
    if report is None:
        return None
    variants = [mirrored(aigen_pb2.VariantScore, v) for v in report.variants]
    return mirrored(aigen_pb2.Stability, report, variants=variants)


def verdict_to_proto(result: ImageVerdict) -> aigen_pb2.GeneratedResult:
    """ImageVerdict -> GeneratedResult."""
    spectral = result.spectral
    return mirrored(
        aigen_pb2.GeneratedResult,
        result,
        verdict=VERDICTS[result.verdict],
        detectors=[detector_to_proto(d) for d in result.detectors],
        stability=stability_to_proto(result.stability),
        spectral=None if spectral is None else mirrored(aigen_pb2.SpectralEvidence, spectral),
    )


def profile_to_proto(profile: DetectorProfile) -> aigen_pb2.DetectorProfile:
    """DetectorProfile -> its message."""
    return mirrored(
        aigen_pb2.DetectorProfile,
        profile,
        detector=common_pb2.ModelRef(name=profile.detector, version=profile.version),
        spectral=profile.spectral is not None,
        created_at=timestamp(profile.created_at),
    )


def stored_to_proto(stored: Stored[DetectorProfile]) -> aigen_pb2.DetectorProfile:
    """A stored profile -> its message; an unreadable one carries only its detector and problem."""
    if stored.profile is not None:
        return profile_to_proto(stored.profile)
    detector = common_pb2.ModelRef(name=stored.key.name, version=stored.key.version)
    return aigen_pb2.DetectorProfile(detector=detector, problem=stored.problem)
