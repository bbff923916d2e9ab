"""Detector selection on the caller's own data, as a job ("ood_evaluation").

The best OOD scorer differs by backbone, so assay compares the profile's
scorers on an in-distribution set and one or more OOD sets and recommends a
default. Following "In or Out?" (Bitterwolf et al. 2023), OOD sets whose
images the model confidently assigns to an in-distribution class are flagged
as possibly contaminated.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from assay.server.dataset_pins import link_path
from assay.server.datasets import Dataset
from assay.server.jobs.manager import JobContext
from assay.server.models.registry import ServedModel
from assay.server.ood.evaluation import (
    DetectorMetrics,
    contamination_warning,
    evaluate_detector,
    rank_detectors,
    recommended_detector,
)
from assay.server.ood.fitting import RoleOutputs, verdicts
from assay.server.ood.service import ProfileJobs
from assay.server.ood.specs import OodEvaluationSpec
from assay.server.stats.softmax import softmax

SCHEMA = "assay.ood.evaluation/v1"


def _scores_json(scores: DetectorMetrics) -> dict[str, Any]:
    return {
        "auroc": scores.auroc.to_json(),
        "aupr_in": scores.aupr_in.to_json(),
        "aupr_out": scores.aupr_out.to_json(),
        "fpr_at_tpr": scores.fpr_at_tpr.to_json(),
        "detection_accuracy": scores.detection_accuracy.to_json(),
        "tpr": scores.tpr,
        "n_in": scores.n_in,
        "n_out": scores.n_out,
    }


class OodScorerEvaluations(ProfileJobs):
    """The "ood_evaluation" job kind."""

    kind = "ood_evaluation"
    spec_type = OodEvaluationSpec

    def _datasets(self, spec: OodEvaluationSpec) -> tuple[Dataset, dict[str, Dataset]]:
        limit, seed = spec.sample_limit, spec.seed
        in_set = self._data.open(spec.in_dataset, limit, seed)
        ood = {}
        for path in spec.ood_datasets:
            shown = Path(link_path(path))  # an uploaded set by its name, not its version id
            name = shown.name if shown.name != "ood" else shown.parent.name
            ood[name] = self._data.open(path, limit, seed)
        return in_set, ood

    def prepare(self, spec: OodEvaluationSpec) -> int:
        """Check that the model exists and the datasets open; units = 1 + OOD sets."""
        self._registry.get(spec.model, spec.version)
        _, ood = self._datasets(spec)
        return 1 + len(ood)

    async def _outputs(self, model: ServedModel, dataset: Dataset) -> RoleOutputs:
        images = await self._profiles.load_images([s.path for s in dataset.samples])
        return await self._profiles.outputs(model, images)

    async def run(self, context: JobContext[OodEvaluationSpec]) -> dict[str, Any]:
        """Score every set with every scorer; metrics, ranking, recommendation."""
        spec = context.spec
        model = self._registry.get(spec.model, spec.version)
        profile = await self._profiles.profile_for(model)
        scorers = list(spec.scorers or profile.scorers)
        in_set, ood_sets = self._datasets(spec)
        await context.progress(0, 1 + len(ood_sets), "in-distribution set")
        in_out = await self._outputs(model, in_set)
        in_scores = _columns(verdicts(profile, in_out, scorers), scorers)
        results: dict[str, dict[str, DetectorMetrics]] = {s: {} for s in scorers}
        plots: dict[str, dict[str, Any]] = {s: {} for s in scorers}
        warnings = {}
        for done, (name, dataset) in enumerate(ood_sets.items(), start=1):
            await context.progress(done, 1 + len(ood_sets), f"OOD set {name}")
            out = await self._outputs(model, dataset)
            out_scores = _columns(verdicts(profile, out, scorers), scorers)
            for scorer in scorers:
                results[scorer][name] = await asyncio.to_thread(
                    evaluate_detector,
                    in_scores[scorer],
                    out_scores[scorer],
                    seed=spec.seed,
                )
                plots[scorer][name] = curves(in_scores[scorer], out_scores[scorer])
            if out.logits is not None and model.labels:
                warning = contamination_warning(softmax(out.logits), list(model.labels))
                if warning is not None:
                    warnings[name] = {**asdict(warning), "message": warning.message}
        ranking = rank_detectors(results)
        return {
            "schema": SCHEMA,
            "model": {"name": model.name, "version": model.config.version},
            "in_dataset": {"source": str(in_set.source), "images": len(in_set.samples)},
            "ood_datasets": {
                n: {"source": str(d.source), "images": len(d.samples)} for n, d in ood_sets.items()
            },
            "results": {
                s: {n: {**_scores_json(v), **plots[s][n]} for n, v in per.items()}
                for s, per in results.items()
            },
            "ranking": [
                {
                    "scorer": r.scorer,
                    "mean_auroc": r.mean_auroc,
                    "mean_fpr_at_tpr": r.mean_fpr_at_tpr,
                }
                for r in ranking
            ],
            "recommended": recommended_detector(results),
            "contamination": warnings,
        }


def curves(
    in_scores: np.ndarray, out_scores: np.ndarray, points: int = 100, bins: int = 30
) -> dict[str, Any]:
    """ROC points (OOD = positive, at most `points`) and score histograms, for plots."""
    thresholds = np.unique(np.quantile(np.r_[in_scores, out_scores], np.linspace(0, 1, points)))[
        ::-1
    ]
    tpr = [float((out_scores >= t).mean()) for t in thresholds]
    fpr = [float((in_scores >= t).mean()) for t in thresholds]
    edges = np.histogram_bin_edges(np.r_[in_scores, out_scores], bins=bins)
    return {
        "roc": {"fpr": [0.0, *fpr, 1.0], "tpr": [0.0, *tpr, 1.0]},
        "histogram": {
            "edges": edges.tolist(),
            "in": np.histogram(in_scores, edges)[0].tolist(),
            "out": np.histogram(out_scores, edges)[0].tolist(),
        },
    }


def _columns(per_image: list[list[Any]], scorers: list[str]) -> dict[str, np.ndarray]:
    return {s: np.array([row[i].score for row in per_image]) for i, s in enumerate(scorers)}
