"""AigenService: DetectGenerated, detector profiles (fit as jobs) and evaluation jobs."""

from __future__ import annotations

import grpc

from assay.server.aigen.detection import AigenDetectors, DetectQuery
from assay.server.aigen.evaluate_job import DetectorEvaluationJobs
from assay.server.aigen.fit_job import DetectorFits
from assay.server.aigen.specs import AigenEvaluationSpec, AigenProfileSpec
from assay.server.errors import InvalidArgumentError
from assay.server.jobs.manager import JobManager
from assay.server.services.aigen_converters import stored_to_proto, verdict_to_proto
from assay.server.services.converters import (
    image_ids,
    images_to_domain,
    optional,
    require,
    spec_from_request,
)
from assay.server.services.jobs import start_job
from assay.server.services.pagination import page_of
from assay.v1 import aigen_pb2, aigen_pb2_grpc, common_pb2, jobs_pb2


def detect_query(request: aigen_pb2.DetectGeneratedRequest) -> DetectQuery:
    """DetectGeneratedRequest -> DetectQuery."""
    for ref in request.detectors:
        if not ref.name:
            raise InvalidArgumentError("a detector reference has an empty name")
    return DetectQuery(
        images=images_to_domain(request.images),
        detectors=[(ref.name, ref.version) for ref in request.detectors],
        ids=image_ids(request.images),
        stability=request.stability,
        max_flip_fraction=optional(request, "max_flip_fraction"),
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
        require(("detector.name", request.detector.name), ("dataset", request.dataset))
        spec = spec_from_request(AigenProfileSpec, request, ref="detector")
        return await start_job(self._jobs, DetectorFits.kind, spec)

    async def ListDetectorProfiles(
        self, request: aigen_pb2.ListDetectorProfilesRequest, context: grpc.aio.ServicerContext
    ) -> aigen_pb2.ListDetectorProfilesResponse:
        """Stored detector profiles (unreadable too) by detector then version, page by page."""
        store = self._detectors.store
        page, token = page_of(
            request,
            {"rpc": "ListDetectorProfiles", "detector": request.detector},
            await store.aentries(request.detector or None),
            lambda e: (e.name, e.version),
        )
        found = await store.alisting(page)
        return aigen_pb2.ListDetectorProfilesResponse(
            profiles=[stored_to_proto(p) for p in found], next_page_token=token
        )

    async def DeleteDetectorProfile(
        self, request: aigen_pb2.DeleteDetectorProfileRequest, context: grpc.aio.ServicerContext
    ) -> aigen_pb2.DetectorProfile:
        """Delete a profile (empty version: the served one)."""
        if not request.detector.name:
            raise InvalidArgumentError("detector.name is required")
        deleted = await self._detectors.delete(request.detector.name, request.detector.version)
        return stored_to_proto(deleted)

    async def EvaluateAigenDetector(
        self, request: aigen_pb2.EvaluateAigenDetectorRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.Job:
        """Start an AI-generated image detector evaluation."""
        require(("detector.name", request.detector.name), ("dataset", request.dataset))
        spec = spec_from_request(AigenEvaluationSpec, request, ref="detector")
        return await start_job(self._jobs, DetectorEvaluationJobs.kind, spec)
