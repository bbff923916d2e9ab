"""RobustnessService: start suites as jobs, or score a small batch inline."""

from __future__ import annotations

import json
from typing import Any

import grpc

from assay.server.errors import InvalidArgumentError
from assay.server.jobs.manager import JobManager
from assay.server.jobs.specs import build_spec
from assay.server.robustness.evaluation import InlineBatch, RobustnessJobs
from assay.server.robustness.specs import RobustnessSpec
from assay.server.services.converters import images_to_domain
from assay.server.services.jobs import start_job
from assay.v1 import jobs_pb2, robustness_pb2, robustness_pb2_grpc

_ATTACKS = {
    robustness_pb2.ATTACK_KIND_SQUARE_LINF: "square_linf",
    robustness_pb2.ATTACK_KIND_SQUARE_L2: "square_l2",
    robustness_pb2.ATTACK_KIND_FGSM: "fgsm",
    robustness_pb2.ATTACK_KIND_PGD_LINF: "pgd_linf",
    robustness_pb2.ATTACK_KIND_PGD_L2: "pgd_l2",
}


_OPTIONAL_FIELDS = (
    "perturbation_frames",
    "shift_consistency",
    "calibration",
    "subgroups",
    "sample_limit",
    "seed",
)


def suite_overrides(suite: robustness_pb2.Suite) -> tuple[str, dict[str, Any]]:
    """Suite message -> (preset, the fields it overrides)."""
    overrides: dict[str, Any] = {}
    for field in ("corruptions", "severities", "perturbations"):
        values = list(getattr(suite, field))
        if values:
            overrides[field] = values
    for field in _OPTIONAL_FIELDS:
        if suite.HasField(field):  # type: ignore[arg-type]
            overrides[field] = getattr(suite, field)
    if suite.attacks:
        attacks = []
        for i, attack in enumerate(suite.attacks):
            if attack.kind not in _ATTACKS:
                raise InvalidArgumentError(f"attacks.{i}.kind is unset or unknown")
            spec: dict[str, Any] = {"kind": _ATTACKS[attack.kind], "epsilon": attack.epsilon}
            if attack.queries:
                spec["queries"] = attack.queries
            if attack.steps:
                spec["steps"] = attack.steps
            attacks.append(spec)
        overrides["attacks"] = attacks
    return suite.preset or "quick", overrides


class RobustnessServicer(robustness_pb2_grpc.RobustnessServiceServicer):
    """Converts RobustnessService calls to jobs and inline evaluations."""

    def __init__(self, manager: JobManager, evaluations: RobustnessJobs) -> None:
        self._manager = manager
        self._evaluations = evaluations

    async def StartEvaluation(
        self, request: robustness_pb2.StartEvaluationRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.Job:
        """Validate and start a suite job."""
        if not request.model.name:
            raise InvalidArgumentError("model.name is empty; name the model to evaluate")
        if not request.dataset:
            raise InvalidArgumentError(
                "dataset is empty; give a folder or manifest under a dataset root"
            )
        preset, overrides = suite_overrides(request.suite)
        spec = build_spec(
            RobustnessSpec,
            model=request.model.name,
            version=request.model.version,
            dataset=request.dataset,
            preset=preset,
            overrides=overrides,
            baseline=request.baseline.name or None,
            baseline_version=request.baseline.version,
        )
        return await start_job(self._manager, RobustnessJobs.kind, spec)

    async def ScoreRobustness(
        self, request: robustness_pb2.ScoreRobustnessRequest, context: grpc.aio.ServicerContext
    ) -> robustness_pb2.ScoreRobustnessResponse:
        """Run a suite on inline images and return the report."""
        if not request.model.name:
            raise InvalidArgumentError("model.name is empty; name the model to evaluate")
        preset, overrides = suite_overrides(request.suite)
        batch = InlineBatch(
            model=request.model.name,
            version=request.model.version,
            images=images_to_domain(request.images),
            labels=list(request.labels),
            groups=list(request.groups) or None,
            preset=preset,
            overrides=overrides,
        )
        report = await self._evaluations.score_inline(batch)
        return robustness_pb2.ScoreRobustnessResponse(json=json.dumps(report, sort_keys=True))
