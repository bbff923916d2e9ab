"""AigenService: DetectGenerated, detector profiles (fit as jobs) and evaluation jobs."""

from __future__ import annotations

import grpc

from assay.server.aigen.detection import AigenDetectors, DetectQuery
from assay.server.aigen.evaluate_job import DetectorEvaluationJobs
from assay.server.aigen.fit_job import DetectorFits
from assay.server.aigen.specs import AigenEvaluationSpec, AigenProfileSpec
from assay.server.errors import InvalidArgumentError
from assay.server.jobs.manager import JobManager
from assay.server.jobs.specs import build_spec
from assay.server.services.aigen_converters import profile_to_proto, verdict_to_proto
from assay.server.services.converters import image_to_domain
from assay.server.services.jobs import job_to_proto
from assay.server.services.pagination import page_request, paginate
from assay.v1 import aigen_pb2, aigen_pb2_grpc, common_pb2, jobs_pb2


def detect_query(request: aigen_pb2.DetectGeneratedRequest) -> DetectQuery:
    """DetectGeneratedRequest -> DetectQuery."""
    images = [image_to_domain(image, i) for i, image in enumerate(request.images)]
    ids = [image.id for image in request.images]
    for ref in request.detectors:
        if not ref.name:
            raise InvalidArgumentError("a detector reference has an empty name")
    return DetectQuery(
        images=images,
        detectors=[(ref.name, ref.version) for ref in request.detectors],
        ids=ids if any(ids) else (),
        stability=request.stability,
        max_flip_fraction=(
            request.max_flip_fraction if request.HasField("max_flip_fraction") else None
        ),
        explain=request.explain,
    )


class AigenServicer(aigen_pb2_grpc.AigenServiceServicer):
    """Converts AigenService calls to detection, profile jobs and evaluation jobs."""

    def __init__(self, jobs: JobManager, detectors: AigenDetectors) -> None:
        self._jobs = jobs
        self._detectors = detectors

    async def DetectGenerated(
        self, request: aigen_pb2.DetectGeneratedRequest, context: grpc.aio.ServicerContext
    ) -> aigen_pb2.DetectGeneratedResponse:
        """Calibrated verdicts for the request's images."""
        result = await self._detectors.detect(detect_query(request))
        return aigen_pb2.DetectGeneratedResponse(
            results=[verdict_to_proto(r) for r in result.results],
            detectors=[common_pb2.ModelRef(name=n, version=v) for n, v in result.detectors],
        )

    async def FitDetector(
        self, request: aigen_pb2.FitDetectorRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.Job:
        """Start a detector profile fit."""
        if not request.detector.name or not request.dataset:
            raise InvalidArgumentError("detector.name and dataset are required")
        spec = build_spec(
            AigenProfileSpec,
            model=request.detector.name,
            version=request.detector.version,
            dataset=request.dataset,
            target_fpr=request.target_fpr or None,  # proto3: 0 is unset
            holdout_fraction=request.holdout_fraction or None,
            sample_limit=request.sample_limit if request.HasField("sample_limit") else None,
            seed=request.seed,
        )
        return job_to_proto(await self._jobs.start(DetectorFits.kind, spec))

    async def ListDetectorProfiles(
        self, request: aigen_pb2.ListDetectorProfilesRequest, context: grpc.aio.ServicerContext
    ) -> aigen_pb2.ListDetectorProfilesResponse:
        """Stored detector profiles by detector then version, one page at a time."""
        page = page_request(
            request.page_size,
            request.page_token,
            {"rpc": "ListDetectorProfiles", "detector": request.detector},
        )
        profiles, token = paginate(
            self._detectors.store.all(request.detector or None),
            lambda p: (p.detector, p.version),
            page,
        )
        return aigen_pb2.ListDetectorProfilesResponse(
            profiles=[profile_to_proto(p) for p in profiles], next_page_token=token
        )

    async def DeleteDetectorProfile(
        self, request: aigen_pb2.DeleteDetectorProfileRequest, context: grpc.aio.ServicerContext
    ) -> aigen_pb2.DetectorProfile:
        """Delete a profile (empty version: the served one)."""
        if not request.detector.name:
            raise InvalidArgumentError("detector.name is required")
        return profile_to_proto(
            self._detectors.delete(request.detector.name, request.detector.version)
        )

    async def EvaluateAigenDetector(
        self, request: aigen_pb2.EvaluateAigenDetectorRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.Job:
        """Start an AI-generated image detector evaluation."""
        if not request.detector.name or not request.dataset:
            raise InvalidArgumentError("detector.name and dataset are required")
        spec = build_spec(
            AigenEvaluationSpec,
            model=request.detector.name,
            version=request.detector.version,
            dataset=request.dataset,
            sample_limit=request.sample_limit if request.HasField("sample_limit") else None,
            seed=request.seed,
            jpeg_qualities=list(request.jpeg_qualities),
            resize_scales=list(request.resize_scales),
        )
        return job_to_proto(await self._jobs.start(DetectorEvaluationJobs.kind, spec))
