"""Fitting a model's OOD profile and scoring images against it.

Fitting runs the model once over the reference images, holds out a seeded
share for thresholds, fits every requested scorer on the rest and sets each
threshold so the in-distribution holdout keeps the target TPR. ViM's final
linear layer is recovered from the model's own (features, logits) pairs by
least squares, so it works over any backend, Triton included; it is refused
when the logits are not an affine map of the features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from assay.server.errors import FailedPreconditionError, InvalidArgumentError
from assay.server.ood.feature_scorers import (
    fit_gaussian,
    fit_knn,
    fit_mahalanobis,
    fit_vim,
    score_features,
)
from assay.server.ood.logit_scorers import LOGIT_SCORERS
from assay.server.ood.patchcore import fit_patch_memory, score_patches
from assay.server.ood.profiles import ModelProfile, ScorerEntry
from assay.server.ood.thresholds import fit_threshold, tail_fraction

FEATURE_SCORERS = ("mahalanobis", "gaussian", "knn", "vim")
MAP_SCORERS = ("patchcore",)
ALL_SCORERS = (*LOGIT_SCORERS, *FEATURE_SCORERS, *MAP_SCORERS)
AUTO_SCORERS = (*LOGIT_SCORERS, *FEATURE_SCORERS)
"""Fitted when a caller names none; PatchCore is for anomaly detection and is fitted on request."""
LINEAR_TOLERANCE = 1e-3
"""Largest relative residual for logits = features · Wᵀ + b to count as linear."""


@dataclass(frozen=True)
class RoleOutputs:
    """A model's outputs by role for a set of images (None when the model lacks one)."""

    logits: np.ndarray | None
    features: np.ndarray | None
    feature_map: np.ndarray | None = None


def needs(scorer: str) -> tuple[str, ...]:
    """The output roles a scorer reads."""
    if scorer in LOGIT_SCORERS:
        return ("logits",)
    if scorer == "vim":
        return ("features", "logits")
    if scorer == "patchcore":
        return ("feature_map",)
    if scorer in FEATURE_SCORERS:
        return ("features",)
    raise InvalidArgumentError(f"unknown scorer {scorer!r}; known: {', '.join(ALL_SCORERS)}")


def choose_scorers(requested: Sequence[str], available: set[str]) -> tuple[str, ...]:
    """Requested scorers (checked against the model's outputs), or all it can feed."""
    if not requested:
        return tuple(s for s in AUTO_SCORERS if set(needs(s)) <= available)
    for scorer in requested:
        missing = set(needs(scorer)) - available
        if missing:
            raise FailedPreconditionError(
                f"scorer {scorer!r} needs the model's {' and '.join(sorted(missing))} output; "
                "map it under outputs: in the model's registry entry"
            )
    return tuple(dict.fromkeys(requested))


def linear_head(features: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W (K x D) and b (K) with logits ≈ features · Wᵀ + b, by least squares.

    Raises:
        FailedPreconditionError: when the fit leaves a relative residual above
            LINEAR_TOLERANCE (the features do not feed the logits linearly).
    """
    design = np.hstack([features.astype(np.float64), np.ones((len(features), 1))])
    if len(features) <= design.shape[1]:
        raise InvalidArgumentError(
            f"ViM needs more reference images than feature dimensions + 1 ({design.shape[1]})"
        )
    solution, *_ = np.linalg.lstsq(design, logits.astype(np.float64), rcond=None)
    residual = np.abs(design @ solution - logits).max() / max(np.abs(logits).max(), 1e-12)
    if residual > LINEAR_TOLERANCE:
        raise FailedPreconditionError(
            f"ViM needs logits that are an affine map of the features (relative residual "
            f"{residual:.2e}); this model's are not"
        )
    return solution[:-1].T, solution[-1]


def _fit_one(scorer: str, train: RoleOutputs, labels: np.ndarray | None) -> object | None:
    if scorer in LOGIT_SCORERS:
        return None
    if scorer == "patchcore":
        assert train.feature_map is not None
        return fit_patch_memory(train.feature_map, coreset_fraction=0.1)
    assert train.features is not None
    if scorer == "mahalanobis":
        if labels is None:
            assert train.logits is not None, "class-conditional Mahalanobis needs labels or logits"
            labels = train.logits.argmax(axis=1)
        return fit_mahalanobis(train.features, labels)
    if scorer == "gaussian":
        return fit_gaussian(train.features)
    if scorer == "knn":
        return fit_knn(train.features)
    assert train.logits is not None
    weight, bias = linear_head(train.features, train.logits)
    return fit_vim(train.features, weight, bias)


def score(scorer: str, profile: object | None, outputs: RoleOutputs) -> np.ndarray:
    """Scores (higher = more OOD) of one scorer for the given outputs."""
    if scorer in LOGIT_SCORERS:
        assert outputs.logits is not None
        return LOGIT_SCORERS[scorer](outputs.logits)
    if scorer == "patchcore":
        assert outputs.feature_map is not None
        return score_patches(profile, outputs.feature_map)[0]  # type: ignore[arg-type]
    assert outputs.features is not None
    return score_features(profile, outputs.features, outputs.logits)


def _rows(outputs: RoleOutputs, index: np.ndarray) -> RoleOutputs:
    return RoleOutputs(
        outputs.logits[index] if outputs.logits is not None else None,
        outputs.features[index] if outputs.features is not None else None,
        outputs.feature_map[index] if outputs.feature_map is not None else None,
    )


def fit_profile(
    outputs: RoleOutputs,
    labels: np.ndarray | None,
    scorers: Sequence[str],
    *,
    model: tuple[str, str, str],
    target_tpr: float,
    holdout_fraction: float,
    seed: int,
) -> ModelProfile:
    """Fit every scorer on the training share and set thresholds on the holdout.

    Args:
        outputs: the model's outputs on the reference images.
        labels: class indices of the reference images (None = use predictions).
        scorers: scorer names (see ALL_SCORERS).
        model: (name, version, fingerprint) the profile is bound to.
        target_tpr: share of in-distribution holdout images each threshold keeps.
        holdout_fraction: share of images held out for the thresholds.
        seed: seed of the split.
    """
    present = [o for o in (outputs.logits, outputs.features, outputs.feature_map) if o is not None]
    count = len(present[0])
    holdout_count = int(np.ceil(count * holdout_fraction))
    if count - holdout_count < 2 or holdout_count < 1:
        raise InvalidArgumentError(
            f"{count} reference images are too few: fitting needs at least 2 for training "
            f"and 1 for the threshold holdout ({holdout_fraction:.0%} held out)"
        )
    order = np.random.default_rng(seed).permutation(count)
    holdout, train = np.sort(order[:holdout_count]), np.sort(order[holdout_count:])
    entries = {}
    for scorer in scorers:
        fitted = _fit_one(
            scorer, _rows(outputs, train), labels[train] if labels is not None else None
        )
        holdout_scores = score(scorer, fitted, _rows(outputs, holdout))
        entries[scorer] = ScorerEntry(
            kind=scorer if fitted is None else type(fitted).KIND,  # type: ignore[attr-defined]
            profile=fitted,  # type: ignore[arg-type]
            threshold=fit_threshold(holdout_scores, target_tpr),
            holdout_scores=np.asarray(holdout_scores, np.float64),
        )
    name, version, fingerprint = model
    return ModelProfile(name, version, fingerprint, target_tpr, entries)


@dataclass(frozen=True)
class OodVerdict:
    """One scorer's verdict on one image."""

    scorer: str
    score: float
    threshold: float
    is_ood: bool
    holdout_tail: float


def verdicts(
    profile: ModelProfile, outputs: RoleOutputs, scorers: Sequence[str]
) -> list[list[OodVerdict]]:
    """Per image, the verdict of each requested scorer."""
    unknown = [s for s in scorers if s not in profile.scorers]
    if unknown:
        raise InvalidArgumentError(
            f"the profile has no scorer {unknown}; fitted: {', '.join(profile.scorers)}"
        )
    columns = {}
    for scorer in scorers:
        entry = profile.scorers[scorer]
        values = score(scorer, entry.profile, outputs)
        if not np.isfinite(values).all():
            raise InvalidArgumentError(
                f"scorer {scorer!r} produced NaN/Inf: check the model outputs"
            )
        columns[scorer] = (values, tail_fraction(entry.holdout_scores, values), entry.threshold)
    count = len(next(iter(columns.values()))[0]) if columns else 0
    return [
        [
            OodVerdict(s, float(v[i]), float(t), bool(v[i] > t), float(tail[i]))
            for s, (v, tail, t) in columns.items()
        ]
        for i in range(count)
    ]


DEFAULT_PREFERENCE = (
    "mahalanobis",
    "vim",
    "gaussian",
    "knn",
    "energy",
    "msp",
    "max_logit",
    "entropy",
)
"""Without OOD data to rank on, feature-space scorers come first: on the demo
classifier the logit scorers rate texture crops as more in-distribution than
digits (energy AUROC 0.09), while Mahalanobis separates every shipped OOD set."""


def default_scorer(profile: ModelProfile) -> str:
    """The scorer used when a caller names none (first fitted in DEFAULT_PREFERENCE)."""
    return next(
        (s for s in DEFAULT_PREFERENCE if s in profile.scorers), next(iter(profile.scorers))
    )


def holdout_quantiles(scores: np.ndarray) -> list[float]:
    """The 1, 5, 25, 50, 75, 95 and 99 % quantiles of holdout scores."""
    return [float(q) for q in np.quantile(scores, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])]


PROFILE_SUMMARY_SCHEMA = "assay.ood.profile_summary/v1"
"""What a FitProfile job's report says it is (shipped as a JSON Schema)."""


def summarize(profile: ModelProfile) -> Mapping[str, object]:
    """JSON-able summary of a profile (the fit job's result)."""
    return {
        "schema": PROFILE_SUMMARY_SCHEMA,
        "model": {"name": profile.model_name, "version": profile.model_version},
        "fingerprint": profile.fingerprint,
        "target_tpr": profile.target_tpr,
        "default_scorer": default_scorer(profile),
        "scorers": {
            name: {
                "threshold": e.threshold,
                "holdout_quantiles": holdout_quantiles(e.holdout_scores),
            }
            for name, e in profile.scorers.items()
        },
    }
