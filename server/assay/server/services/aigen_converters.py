"""AigenService messages <-> domain results (used by AigenService and Predict's signal)."""

from __future__ import annotations

from assay.server.aigen.profiles import DetectorProfile
from assay.server.aigen.verdicts import ImageVerdict
from assay.server.services.timestamps import timestamp
from assay.v1 import aigen_pb2, common_pb2

VERDICTS = {
    "REAL": aigen_pb2.AIGEN_VERDICT_REAL,
    "GENERATED": aigen_pb2.AIGEN_VERDICT_GENERATED,
    "UNSURE": aigen_pb2.AIGEN_VERDICT_UNSURE,
}


def verdict_to_proto(result: ImageVerdict) -> aigen_pb2.GeneratedResult:
    """ImageVerdict -> GeneratedResult."""
    message = aigen_pb2.GeneratedResult(
        id=result.id,
        verdict=VERDICTS[result.verdict],
        probability=result.probability,
        log_odds=result.log_odds,
        notes=result.notes,
    )
    for d in result.detectors:
        message.detectors.add(
            detector=common_pb2.ModelRef(name=d.detector, version=d.version),
            probability=d.probability,
            threshold=d.threshold,
            calibrated=d.calibrated,
            log_odds=d.log_odds,
            generated=d.generated,
            crops=[
                aigen_pb2.CropScore(
                    top=c.top,
                    left=c.left,
                    height=c.height,
                    width=c.width,
                    probability=c.probability,
                )
                for c in d.crops
            ],
        )
    if result.stability is not None:
        s = result.stability
        message.stability.CopyFrom(
            aigen_pb2.Stability(
                flip_fraction=s.flip_fraction,
                max_flip_fraction=s.max_flip_fraction,
                variants=[
                    aigen_pb2.VariantScore(
                        name=v.name, log_odds=v.log_odds, generated=v.generated, flipped=v.flipped
                    )
                    for v in s.variants
                ],
            )
        )
    if result.spectral is not None:
        e = result.spectral
        message.spectral.CopyFrom(
            aigen_pb2.SpectralEvidence(
                score=e.score,
                threshold=e.threshold,
                deviates=e.deviates,
                spectrum=e.spectrum,
                peak_score=e.peak_score,
            )
        )
    return message


def profile_to_proto(profile: DetectorProfile) -> aigen_pb2.DetectorProfile:
    """DetectorProfile -> its message."""
    return aigen_pb2.DetectorProfile(
        detector=common_pb2.ModelRef(name=profile.detector, version=profile.version),
        fingerprint=profile.fingerprint,
        threshold=profile.threshold,
        target_fpr=profile.target_fpr,
        calibration_fpr=profile.calibration_fpr,
        holdout_fpr=profile.holdout_fpr,
        holdout_tpr=profile.holdout_tpr,
        holdout_ap=profile.holdout_ap,
        holdout_auroc=profile.holdout_auroc,
        real_images=profile.real_images,
        generated_images=profile.generated_images,
        spectral=profile.spectral is not None,
        created_at=timestamp(profile.created_at),
    )
