"""The robustness report: every metric with a bootstrap interval (95 % by default), as JSON.

Schema "assay.robustness.report/v1" (stable; fields are only ever added):

    schema, model{name, version, backend}, baseline{name, kind} | null,
    dataset{source, images, classes}, suite{...},
    clean{error: E, calibration{ece: E, mce, nll: E, brier: E, temperature, ece_after_temperature,
          reliability[{lower, upper, count, mean_confidence, accuracy}]}},
    corruptions{name: {family, extra, errors{severity: E}, baseline_errors{severity: x},
                       mean_error: E, ce, relative_ce}},
    mce: E | null, relative_mce: E | null,
    perturbations{name: {flip_rate: E, compare_to_first}}, mean_flip_rate: x | null,
    shift_consistency: E | null,
    subgroups{accuracy{group: x}, counts{group: n}, worst_group, worst_accuracy: E, spread} | null,
    attacks[{kind, norm, epsilon, queries, clean_accuracy, robust_accuracy: E, success_rate,
             median_queries, mean_queries, score_calls}],
    timing{unit: seconds}

where E = {value, low, high, confidence}. Intervals resample images, with
the same rows for model and baseline (a paired bootstrap).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from assay.server.robustness import calibration, metrics
from assay.server.robustness.corruptions import REGISTRY, SEVERITIES
from assay.server.robustness.estimates import (
    ece_estimate,
    error_rate_estimate,
    flip_rate_estimate,
    shift_consistency_estimate,
    worst_group_accuracy_estimate,
)
from assay.server.robustness.perturbations import PERTURBATIONS
from assay.server.robustness.runner import EvaluationInputs
from assay.server.robustness.scoring import ModelScorer
from assay.server.robustness.suite import SuiteSpec
from assay.server.stats.bootstrap import bootstrap_estimate, mean_estimate
from assay.server.stats.estimate import DEFAULT_CONFIDENCE, Estimate, EstimateJson
from assay.server.stats.softmax import log_softmax, softmax

SCHEMA = "assay.robustness.report/v1"
IMAGENET_CLASSES = 1000
CONFIDENCE = DEFAULT_CONFIDENCE
"""Coverage of every interval in the report (recorded in each estimate)."""


@dataclass(frozen=True)
class UnitData:
    """A stored unit: its meta and arrays."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


def _resampling(suite: SuiteSpec) -> dict[str, Any]:
    """The bootstrap settings every interval of the report uses."""
    return {
        "n_resamples": suite.bootstrap_resamples,
        "confidence": CONFIDENCE,
        "seed": suite.seed,
    }


def _mean_ci(values: np.ndarray, suite: SuiteSpec) -> EstimateJson:
    """Mean over images (and columns) with a vectorised bootstrap interval."""
    return mean_estimate(values, **_resampling(suite)).to_json()


def _ci(statistic: Callable[..., float], *arrays: np.ndarray, suite: SuiteSpec) -> EstimateJson:
    """Point estimate with a percentile-bootstrap interval over images.

    A statistic undefined on some resamples (e.g. a relative CE whose baseline
    denominator vanishes) keeps its point estimate and gets no interval.
    """
    try:
        estimate = bootstrap_estimate(statistic, *arrays, **_resampling(suite))
    except ValueError:
        estimate = Estimate.point(statistic(*arrays), CONFIDENCE)
    return estimate.to_json()


def _clean(
    units: Mapping[str, UnitData], labels: np.ndarray, probabilities: bool, suite: SuiteSpec
) -> dict[str, Any]:
    scores = units["clean"].arrays["model/scores"]
    preds = scores.argmax(axis=1)
    resampling = _resampling(suite)
    out: dict[str, Any] = {"error": error_rate_estimate(preds, labels, **resampling).to_json()}
    if suite.calibration:
        logits = not probabilities
        fit = calibration.fit_temperature(scores, labels) if logits else None
        out["calibration"] = {
            "ece": ece_estimate(scores, labels, from_logits=logits, **resampling).to_json(),
            "mce": calibration.maximum_calibration_error(scores, labels, from_logits=logits),
            "nll": _mean_ci(_per_sample_nll(scores, labels, logits), suite),
            "brier": _mean_ci(_per_sample_brier(scores, labels, logits), suite),
            "temperature": fit.temperature if fit else None,
            "ece_after_temperature": fit.ece_after if fit else None,
            "reliability": [
                asdict(b)
                for b in calibration.reliability_diagram(scores, labels, from_logits=logits)
            ],
        }
    return out


def _probabilities(scores: np.ndarray, logits: bool) -> np.ndarray:
    return softmax(scores) if logits else np.asarray(scores, np.float64)


def _per_sample_nll(scores: np.ndarray, labels: np.ndarray, logits: bool) -> np.ndarray:
    """-log p(y | x) per image (its mean is the NLL)."""
    if logits:
        return -log_softmax(scores)[np.arange(len(labels)), labels]
    return -np.log(np.clip(_probabilities(scores, False)[np.arange(len(labels)), labels], 1e-12, 1))


def _per_sample_brier(scores: np.ndarray, labels: np.ndarray, logits: bool) -> np.ndarray:
    """Sum over classes of (p_k - y_k)^2 per image (its mean is the Brier score)."""
    probs = _probabilities(scores, logits)
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return ((probs - onehot) ** 2).sum(axis=1)


def _wrong(units: Mapping[str, UnitData], key: str, role: str, labels: np.ndarray) -> np.ndarray:
    return (units[key].arrays[f"{role}/pred"] != labels).astype(np.float64)


@dataclass(frozen=True)
class _Errors:
    """Per-image errors (1.0 = wrong): N x (corruption, severity) columns and clean."""

    columns: list[tuple[str, int]]
    model: np.ndarray
    model_clean: np.ndarray
    baseline: np.ndarray | None
    baseline_clean: np.ndarray | None

    def arrays(self) -> list[np.ndarray]:
        """Rows to resample together (model and baseline stay paired)."""
        if self.baseline is None or self.baseline_clean is None:
            return [self.model, self.model_clean]
        return [self.model, self.model_clean, self.baseline, self.baseline_clean]


def _errors(
    suite: SuiteSpec, units: Mapping[str, UnitData], labels: np.ndarray, paired: bool
) -> _Errors:
    columns = [(c, s) for c in suite.corruptions for s in suite.severities]

    def matrix(role: str) -> np.ndarray:
        keys = [f"corruption/{c}/{s}" for c, s in columns]
        return np.stack([_wrong(units, k, role, labels) for k in keys], axis=1)

    def clean(role: str) -> np.ndarray:
        return (units["clean"].arrays[f"{role}/scores"].argmax(1) != labels).astype(np.float64)

    return _Errors(
        columns,
        matrix("model"),
        clean("model"),
        matrix("baseline") if paired else None,
        clean("baseline") if paired else None,
    )


def _uses_alexnet(suite: SuiteSpec, classes: int, paired: bool) -> bool:
    """AlexNet's published errors are the baseline only where they apply.

    They exist for ImageNet-1k models, all five severities and the 15
    benchmark corruptions; the mCE then covers those 15 (as in ImageNet-C),
    and the extras get errors but no CE.
    """
    return (
        not paired
        and classes == IMAGENET_CLASSES
        and tuple(suite.severities) == SEVERITIES
        and any(c in metrics.ALEXNET_ERRORS for c in suite.corruptions)
    )


def _summary(suite: SuiteSpec, names: list[str], *rows: np.ndarray) -> metrics.CorruptionSummary:
    """CE/mCE over `names` from (model, model_clean[, baseline, baseline_clean]) error rows."""
    k = len(suite.severities)
    position = {c: i for i, c in enumerate(suite.corruptions)}

    def curves(matrix: np.ndarray) -> dict[str, list[float]]:
        means = matrix.mean(axis=0)
        return {c: list(means[position[c] * k : (position[c] + 1) * k]) for c in names}

    if len(rows) == 2:
        return metrics.corruption_summary(curves(rows[0]), float(rows[1].mean()))
    return metrics.corruption_summary(
        curves(rows[0]), float(rows[1].mean()), curves(rows[2]), float(rows[3].mean()),
        baseline_name="model",
    )  # fmt: skip


def _per_corruption(suite: SuiteSpec, errors: _Errors, alexnet: bool) -> dict[str, Any]:
    report: dict[str, Any] = {}
    k = len(suite.severities)
    for i, name in enumerate(suite.corruptions):
        entry: dict[str, Any] = {"family": REGISTRY[name].family, "extra": REGISTRY[name].extra}
        entry["errors"] = {
            str(s): _mean_ci(errors.model[:, i * k + j], suite)
            for j, s in enumerate(suite.severities)
        }
        entry["mean_error"] = _mean_ci(errors.model[:, i * k : (i + 1) * k], suite)
        if errors.baseline is not None:
            entry["baseline_errors"] = {
                str(s): float(errors.baseline[:, i * k + j].mean())
                for j, s in enumerate(suite.severities)
            }
        elif alexnet and name in metrics.ALEXNET_ERRORS:
            entry["baseline_errors"] = {
                str(s): metrics.ALEXNET_ERRORS[name][s - 1] for s in suite.severities
            }
        entry["ce"] = entry["relative_ce"] = None
        report[name] = entry
    return report


def _corruptions(
    suite: SuiteSpec, units: Mapping[str, UnitData], labels: np.ndarray, paired: bool, classes: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-corruption errors and CEs, and the mCE block (None without a baseline)."""
    empty: dict[str, Any] = {
        "mce": None,
        "relative_mce": None,
        "mce_baseline": None,
        "mce_corruptions": [],
    }
    if not suite.corruptions:
        return {}, empty
    errors = _errors(suite, units, labels, paired)
    alexnet = _uses_alexnet(suite, classes, paired)
    report = _per_corruption(suite, errors, alexnet)
    if not (paired or alexnet):
        return report, empty
    rows = errors.arrays()
    names = [c for c in suite.corruptions if paired or c in metrics.ALEXNET_ERRORS]
    point = _summary(suite, names, *rows)
    for name in names:
        report[name]["ce"] = point.corruption_errors[name]
        report[name]["relative_ce"] = point.relative_corruption_errors[name]
    return report, {
        "mce": _ci(lambda *r: _summary(suite, names, *r).mce, *rows, suite=suite),
        "relative_mce": _ci(lambda *r: _summary(suite, names, *r).relative_mce, *rows, suite=suite),
        "mce_baseline": "alexnet (published ImageNet-C errors)" if alexnet else "baseline model",
        "mce_corruptions": names,
    }


def _perturbations(
    suite: SuiteSpec, units: Mapping[str, UnitData]
) -> tuple[dict[str, Any], float | None]:
    out = {}
    rates = {}
    for name in suite.perturbations:
        preds = units[f"perturbation/{name}"].arrays["model/preds"]
        noise = PERTURBATIONS[name].compare_to_first
        estimate = flip_rate_estimate(preds, noise=noise, **_resampling(suite))
        out[name] = {"flip_rate": estimate.to_json(), "compare_to_first": noise}
        rates[name] = estimate.value
    return out, (metrics.mean_flip_rate(rates) if rates else None)


def _attacks(suite: SuiteSpec, units: Mapping[str, UnitData]) -> list[dict[str, Any]]:
    """Robust accuracy (with CI), success rate and query statistics per attack."""
    out = []
    for index, spec in enumerate(suite.attacks):
        unit = units[f"attack/{index}/{spec.kind.value}"]
        clean = unit.arrays["model/clean_correct"].astype(bool)
        success = unit.arrays["model/success"].astype(bool)
        queries = unit.arrays["model/queries"]
        broken = clean & success
        robust = (clean & ~success).astype(np.float64)
        out.append({
            "kind": spec.kind.value, "norm": unit.meta["norm"], "epsilon": spec.epsilon,
            "queries": spec.queries, "clean_accuracy": float(clean.mean()),
            "robust_accuracy": _mean_ci(robust, suite),
            "success_rate": float(broken.sum() / clean.sum()) if clean.any() else None,
            "median_queries": float(np.median(queries[broken])) if broken.any() else None,
            "mean_queries": float(queries[broken].mean()) if broken.any() else None,
            "score_calls": int(unit.meta["score_calls"]),
        })  # fmt: skip
    return out


def build_report(
    suite: SuiteSpec,
    units: Mapping[str, UnitData],
    inputs: EvaluationInputs,
    scorers: Mapping[str, ModelScorer],
    *,
    source: str,
    spec: Mapping[str, Any],
) -> dict[str, Any]:
    """The report document for a finished suite."""
    labels = np.asarray(inputs.labels)
    model = scorers["model"]
    baseline = scorers.get("baseline")
    corruption_report, mce_block = _corruptions(
        suite, units, labels, baseline is not None, len(model.labels)
    )
    perturbations, mean_fr = _perturbations(suite, units)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "model": {
            "name": model.model.name,
            "version": model.model.config.version,
            "backend": model.model.backend.metadata().kind,
        },
        "baseline": {"name": baseline.model.name} if baseline else None,
        "dataset": {"source": source, "images": len(labels), "classes": len(np.unique(labels))},
        "suite": suite.model_dump(mode="json"),
        "spec": dict(spec),
        "clean": _clean(units, labels, model.outputs_probabilities, suite),
        "corruptions": corruption_report,
        **mce_block,
        "perturbations": perturbations,
        "mean_flip_rate": mean_fr,
        "shift_consistency": None,
        "subgroups": None,
        "attacks": _attacks(suite, units),
        "timing": {key: unit.meta.get("seconds") for key, unit in units.items()},
    }  # fmt: skip
    resamples = _resampling(suite)
    if suite.shift_consistency and "shift" in units:
        pair = units["shift"].arrays
        estimate = shift_consistency_estimate(
            pair["model/pred_a"], pair["model/pred_b"], **resamples
        )
        report["shift_consistency"] = estimate.to_json()
    if suite.subgroups and inputs.groups is not None:
        preds = units["clean"].arrays["model/scores"].argmax(1)
        groups = np.asarray(inputs.groups)
        result = metrics.subgroup_accuracy(preds, labels, groups)
        worst = worst_group_accuracy_estimate(preds, labels, groups, **resamples)
        report["subgroups"] = {
            "accuracy": dict(result.accuracy),
            "counts": {k: int(v) for k, v in result.counts.items()},
            "worst_group": result.worst_group,
            "worst_accuracy": worst.to_json(),
            "spread": result.spread,
        }
    return json_safe(report)


def json_safe(value: Any) -> Any:
    """The value with numpy scalars as Python numbers and NaN/Inf as None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
