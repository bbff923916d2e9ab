"""OodService: fit profiles (jobs), list/delete them, score images."""

from __future__ import annotations

import io

import grpc
import numpy as np
from PIL import Image

from assay.server.errors import InvalidArgumentError
from assay.server.jobs.manager import JobManager
from assay.server.ood.anomaly_job import AnomalyEvaluations
from assay.server.ood.evaluate_job import OodScorerEvaluations
from assay.server.ood.fitting import default_scorer, holdout_quantiles
from assay.server.ood.profiles import ModelProfile
from assay.server.ood.service import AnomalyVerdict, OodProfiles
from assay.server.ood.specs import AnomalyEvaluationSpec, OodEvaluationSpec, OodProfileSpec
from assay.server.profiles import Stored
from assay.server.services.converters import (
    images_to_domain,
    ood_score,
    require,
    served_ref,
    spec_from_request,
)
from assay.server.services.jobs import start_job
from assay.server.services.mirror import mirrored
from assay.server.services.pagination import page_of
from assay.server.services.timestamps import timestamp_from_iso
from assay.v1 import common_pb2, jobs_pb2, ood_pb2, ood_pb2_grpc
from assay.v1.tensor_codec import from_array


def heat_png(heat: np.ndarray, threshold: float) -> bytes:
    """8-bit greyscale PNG of an anomaly map: 128 = the threshold, 255 = twice it or more."""
    scaled = np.clip(heat / max(threshold, 1e-12) * 128.0, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(scaled).save(buffer, format="PNG")
    return buffer.getvalue()


def profile_to_proto(profile: ModelProfile) -> ood_pb2.OodProfile:
    """ModelProfile -> OodProfile."""
    return ood_pb2.OodProfile(
        model=common_pb2.ModelRef(name=profile.model_name, version=profile.model_version),
        fingerprint=profile.fingerprint,
        target_tpr=profile.target_tpr,
        scorers=[
            ood_pb2.ScorerThreshold(
                scorer=name,
                threshold=e.threshold,
                holdout_quantiles=holdout_quantiles(e.holdout_scores),
            )
            for name, e in profile.scorers.items()
        ],
        default_scorer=default_scorer(profile),
        created_at=timestamp_from_iso(profile.created_at),
    )


def stored_to_proto(stored: Stored[ModelProfile]) -> ood_pb2.OodProfile:
    """A stored profile -> OodProfile; an unreadable one carries only its model and problem."""
    if stored.profile is not None:
        return profile_to_proto(stored.profile)
    model = common_pb2.ModelRef(name=stored.key.name, version=stored.key.version)
    return ood_pb2.OodProfile(model=model, problem=stored.problem)


_MAP_FORMATS: dict[int, int] = {
    ood_pb2.ANOMALY_MAP_FORMAT_UNSPECIFIED: ood_pb2.ANOMALY_MAP_FORMAT_NONE,  # the default
    ood_pb2.ANOMALY_MAP_FORMAT_NONE: ood_pb2.ANOMALY_MAP_FORMAT_NONE,
    ood_pb2.ANOMALY_MAP_FORMAT_FLOAT16: ood_pb2.ANOMALY_MAP_FORMAT_FLOAT16,
    ood_pb2.ANOMALY_MAP_FORMAT_PNG: ood_pb2.ANOMALY_MAP_FORMAT_PNG,
}


def map_format(value: int) -> int:
    """The requested AnomalyMapFormat with UNSPECIFIED resolved to the default (NONE)."""
    if value not in _MAP_FORMATS:
        raise InvalidArgumentError(f"unknown map_format {value}")
    return _MAP_FORMATS[value]


def anomaly_to_proto(image_id: str, result: AnomalyVerdict, fmt: int) -> ood_pb2.AnomalyResult:
    """AnomalyVerdict -> one DetectAnomaly result, its map (if any) in the format asked for."""
    item = mirrored(ood_pb2.AnomalyResult, result, id=image_id, map=None)  # map: below
    if result.map is not None and fmt == ood_pb2.ANOMALY_MAP_FORMAT_FLOAT16:
        item.map.CopyFrom(from_array(result.map.astype(np.float16)))
    elif result.map is not None:
        item.map_png = heat_png(result.map, result.threshold)
    return item


def _scored_model(request: ood_pb2.ScoreOODRequest | ood_pb2.DetectAnomalyRequest) -> None:
    if not request.model.name:
        raise InvalidArgumentError("model.name is empty; name the model to score with")


class OodServicer(ood_pb2_grpc.OodServiceServicer):
    """Converts OodService calls to profile jobs and scoring."""

    def __init__(self, jobs: JobManager, profiles: OodProfiles) -> None:
        self._jobs = jobs
        self._profiles = profiles

    async def FitProfile(
        self, request: ood_pb2.FitProfileRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.Job:
        """Start a profile fit job."""
        require(("model.name", request.model.name), ("dataset", request.dataset))
        spec = spec_from_request(OodProfileSpec, request)
        return await start_job(self._jobs, OodProfiles.kind, spec)

    async def EvaluateOodScorers(
        self, request: ood_pb2.EvaluateOodScorersRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.Job:
        """Start a job comparing the profile's OOD scorers."""
        require(("model.name", request.model.name), ("in_dataset", request.in_dataset))
        spec = spec_from_request(OodEvaluationSpec, request)
        return await start_job(self._jobs, OodScorerEvaluations.kind, spec)

    async def DetectAnomaly(
        self, request: ood_pb2.DetectAnomalyRequest, context: grpc.aio.ServicerContext
    ) -> ood_pb2.DetectAnomalyResponse:
        """Anomaly scores and maps from the profile's PatchCore memory."""
        _scored_model(request)
        images = images_to_domain(request.images)
        fmt = map_format(request.map_format)
        with_maps = fmt != ood_pb2.ANOMALY_MAP_FORMAT_NONE
        model, results = await self._profiles.detect_anomaly(
            request.model.name, request.model.version, images, with_maps
        )
        return ood_pb2.DetectAnomalyResponse(
            model=served_ref(model),
            results=[
                anomaly_to_proto(image.id, result, fmt)
                for image, result in zip(request.images, results, strict=True)
            ],
        )

    async def EvaluateAnomaly(
        self, request: ood_pb2.EvaluateAnomalyRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.Job:
        """Start an anomaly evaluation job."""
        require(("model.name", request.model.name), ("dataset", request.dataset))
        spec = spec_from_request(AnomalyEvaluationSpec, request)
        return await start_job(self._jobs, AnomalyEvaluations.kind, spec)

    async def ListProfiles(
        self, request: ood_pb2.ListProfilesRequest, context: grpc.aio.ServicerContext
    ) -> ood_pb2.ListProfilesResponse:
        """Stored profiles by model then version, one page at a time (unreadable ones too)."""
        store = self._profiles.store
        page, token = page_of(
            request,
            {"rpc": "ListProfiles", "model": request.model},
            await store.aentries(request.model or None),
            lambda e: (e.name, e.version),
        )
        found = await store.alisting(page)
        return ood_pb2.ListProfilesResponse(
            profiles=[stored_to_proto(p) for p in found], next_page_token=token
        )

    async def DeleteProfile(
        self, request: ood_pb2.DeleteProfileRequest, context: grpc.aio.ServicerContext
    ) -> ood_pb2.OodProfile:
        """Remove a model version's profile, readable or not."""
        deleted = await self._profiles.delete(request.model.name, request.model.version)
        return stored_to_proto(deleted)

    async def ScoreOOD(
        self, request: ood_pb2.ScoreOODRequest, context: grpc.aio.ServicerContext
    ) -> ood_pb2.ScoreOODResponse:
        """Score images with the model's profile."""
        _scored_model(request)
        model, results = await self._profiles.score(
            request.model.name,
            request.model.version,
            images_to_domain(request.images),
            list(request.scorers),
        )
        response = ood_pb2.ScoreOODResponse(model=served_ref(model))
        for image, verdicts in zip(request.images, results, strict=True):
            response.results.add(id=image.id, scores=[ood_score(v) for v in verdicts])
        return response
