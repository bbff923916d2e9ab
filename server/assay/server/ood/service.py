"""OOD profiles as a service: the fit job, the profile store, scoring served images.

Profiles live in the shared profile store (format `OOD_PROFILES`), one row per
model version in the server's store, and are bound to the model's fingerprint
(its outputs on a fixed probe); a profile for another version, for changed
weights, or one that cannot be read, is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assay.server.datasets import DatasetImages, label_indices
from assay.server.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
)
from assay.server.jobs.manager import JobContext
from assay.server.models.config import OutputRole
from assay.server.models.preprocess import ImageInput, PixelImage
from assay.server.models.registry import ModelRegistry, ServedModel
from assay.server.ood.fitting import (
    OodVerdict,
    RoleOutputs,
    choose_scorers,
    default_scorer,
    fit_profile,
    summarize,
    verdicts,
)
from assay.server.ood.patchcore import PatchMemory, anomaly_map, score_patches
from assay.server.ood.profiles import ModelProfile
from assay.server.ood.specs import OodProfileSpec
from assay.server.ood.thresholds import tail_fraction
from assay.server.profiles import ProfileStore, Stored, fingerprint

CHUNK = 64
PROBE_SEED = 20260101


def role_outputs(model: ServedModel, outputs: dict[str, np.ndarray]) -> RoleOutputs:
    """The logits, features and feature-map roles of a batch of backend outputs."""
    logits = model.output_name(OutputRole.LOGITS)
    features = model.output_name(OutputRole.FEATURES)
    feature_map = model.output_name(OutputRole.FEATURE_MAP)
    flat = outputs[features].reshape(len(outputs[features]), -1) if features else None
    return RoleOutputs(
        outputs[logits].astype(np.float64) if logits else None,
        flat.astype(np.float64) if flat is not None else None,
        outputs[feature_map].astype(np.float32) if feature_map else None,
    )


def available_roles(model: ServedModel) -> set[str]:
    """Which of logits / features / feature_map the model exposes."""
    roles = model.config.outputs
    wanted = (OutputRole.LOGITS, OutputRole.FEATURES, OutputRole.FEATURE_MAP)
    return {r.value for r in wanted if r in roles}


class OodProfiles:
    """The "ood_profile" job kind and online scoring against stored profiles."""

    kind = "ood_profile"
    spec_type = OodProfileSpec

    def __init__(
        self, registry: ModelRegistry, data: DatasetImages, store: ProfileStore[ModelProfile]
    ) -> None:
        self.registry = registry
        self.data = data
        self.store = store
        self._fingerprints: dict[tuple[str, str], str] = {}

    async def outputs(self, model: ServedModel, images: Sequence[ImageInput]) -> RoleOutputs:
        """The model's logits/features for images, through its batcher."""
        loop = asyncio.get_running_loop()
        prep = model.preprocessor
        parts = []

        def build(chunk: Sequence[ImageInput]) -> np.ndarray:
            return prep.build(prep.open(chunk))

        for start in range(0, len(images), CHUNK):
            batch = await loop.run_in_executor(self.data.pool, build, images[start : start + CHUNK])
            parts.append(await model.batcher.submit({model.input_name: batch}))
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return role_outputs(model, merged)

    async def load_images(self, paths: Sequence[Path]) -> list[ImageInput]:
        """Decode image files (size-checked) on the pool, for the profile and evaluation jobs."""
        return [PixelImage(array) for array in await self.data.load(paths)]

    async def fingerprint(self, model: ServedModel) -> str:
        """The model's outputs on a fixed probe, hashed (cached per model version)."""
        key = (model.name, model.config.version)
        if key not in self._fingerprints:
            spec = model.config.input
            rng = np.random.default_rng(PROBE_SEED)
            probe = [
                PixelImage(rng.integers(0, 256, (spec.height, spec.width, 3), dtype=np.uint8))
                for _ in range(4)
            ]
            out = await self.outputs(model, probe)
            arrays = {
                k: v
                for k, v in (("logits", out.logits), ("features", out.features))
                if v is not None
            }
            self._fingerprints[key] = fingerprint(arrays)
        return self._fingerprints[key]

    def prepare(self, spec: OodProfileSpec) -> int:
        """Check the model, its scorers and the dataset; a fit is one unit of work."""
        model = self.registry.get(spec.model, spec.version)
        choose_scorers(list(spec.scorers), available_roles(model))
        dataset = self.data.open(spec.dataset)
        if len(dataset.samples) < 3:
            raise InvalidArgumentError(
                f"a profile needs at least 3 reference images, the dataset has "
                f"{len(dataset.samples)}"
            )
        return 1

    async def run(self, context: JobContext[OodProfileSpec]) -> dict[str, Any]:
        """Fit, store and summarise the profile."""
        spec = context.spec
        model = self.registry.get(spec.model, spec.version)
        scorers = choose_scorers(list(spec.scorers), available_roles(model))
        dataset = self.data.open(spec.dataset, spec.sample_limit, spec.seed)
        try:
            labels: np.ndarray | None = (
                label_indices(dataset, model.labels) if model.labels else None
            )
        except InvalidArgumentError:
            labels = None  # not the model's classes (e.g. unlabeled data): use predictions
        await context.progress(0, 1, "scoring reference images")
        images = await self.load_images([s.path for s in dataset.samples])
        outputs = await self.outputs(model, images)
        await context.progress(0, 1, "fitting")
        bound = (model.name, model.config.version, await self.fingerprint(model))
        profile = await asyncio.to_thread(
            fit_profile,
            outputs,
            labels,
            scorers,
            model=bound,
            target_tpr=spec.target_tpr,
            holdout_fraction=spec.holdout_fraction,
            seed=spec.seed,
        )
        await self.store.asave(profile)
        await context.put("profile", {"images": len(images)}, {})
        return {**summarize(profile), "reference_images": len(images)}

    async def delete(self, model_name: str, version: str) -> Stored[ModelProfile]:
        """Delete a profile, readable or not; an empty version means the model's current one."""
        if not version:
            version = self.registry.get(model_name).config.version
        return await self.store.adelete(model_name, version)

    async def profile_for(self, model: ServedModel) -> ModelProfile:
        """The model's profile (cached), refused when missing, unreadable or on other weights."""
        profile = await self.store.get(model.name, model.config.version)
        if profile is None:
            others = await self.store.aversions(model.name)
            hint = f" (profiles exist for versions {', '.join(others)})" if others else ""
            raise FailedPreconditionError(
                f"model {model.name!r} version {model.config.version!r} has no OOD profile{hint}; "
                "fit one with FitProfile"
            )
        if profile.fingerprint != await self.fingerprint(model):
            raise FailedPreconditionError(
                f"the OOD profile of {model.name!r} was fitted on different weights "
                "(fingerprint mismatch); refit it"
            )
        return profile

    async def score(
        self, model_name: str, version: str, images: Sequence[ImageInput], scorers: Sequence[str]
    ) -> tuple[ServedModel, list[list[OodVerdict]]]:
        """Verdicts for images (the profile's default scorer when none is named)."""
        model = self.registry.get(model_name, version)
        if not images:
            raise InvalidArgumentError("no images; send at least one")
        profile = await self.profile_for(model)
        outputs = await self.outputs(model, images)
        return model, verdicts(profile, outputs, list(scorers) or [default_scorer(profile)])

    async def detect_anomaly(
        self, model_name: str, version: str, images: Sequence[ImageInput], with_maps: bool
    ) -> tuple[ServedModel, list[AnomalyVerdict]]:
        """Image scores and verdicts from the profile's PatchCore memory, with maps on request."""
        model = self.registry.get(model_name, version)
        if not images:
            raise InvalidArgumentError("no images; send at least one")
        profile = await self.profile_for(model)
        entry = profile.scorers.get("patchcore")
        if entry is None:
            raise FailedPreconditionError(
                f"the OOD profile of {model.name!r} has no PatchCore memory; fit one with "
                'FitProfile scorers: ["patchcore"] on normal images'
            )
        outputs = await self.outputs(model, images)
        assert outputs.feature_map is not None and isinstance(entry.profile, PatchMemory)
        scores, patch_maps = await asyncio.to_thread(
            score_patches, entry.profile, outputs.feature_map
        )
        tails = tail_fraction(entry.holdout_scores, scores)
        size = (model.config.input.height, model.config.input.width)
        results = []
        for i, value in enumerate(scores):
            heat = anomaly_map(patch_maps[i], size=size) if with_maps else None
            results.append(
                AnomalyVerdict(
                    float(value),
                    entry.threshold,
                    bool(value > entry.threshold),
                    float(tails[i]),
                    heat,
                )
            )
        flagged = sum(r.is_anomalous for r in results)
        if flagged:
            model.observers.metrics.anomaly_flagged.labels(model=model.name).inc(flagged)
        return model, results


class ProfileJobs:
    """Base of the OOD job kinds that score with stored profiles (served models, data)."""

    def __init__(self, profiles: OodProfiles) -> None:
        self._profiles = profiles
        self._registry = profiles.registry
        self._data = profiles.data


@dataclass(frozen=True)
class AnomalyVerdict:
    """PatchCore's verdict on one image."""

    score: float
    threshold: float
    is_anomalous: bool
    holdout_tail: float
    map: np.ndarray | None
    """Anomaly map at the model's input size (float32), when asked for."""
