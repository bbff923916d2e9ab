"""Fitted OOD scores on penultimate-layer features: Mahalanobis, Gaussian, KNN, ViM.

Each scorer is fitted on in-distribution reference features (``fit_*`` returns a
frozen ``*Profile``) and scores N x D query features (``*_score(profile, ...)``
returns N float64 scores, **higher = more anomalous**). Profiles serialise as
``to_arrays()`` (named numpy arrays) + ``meta()`` (JSON: ``kind``, ``version``,
dimensions) and come back with ``from_arrays(arrays, meta)``, bit for bit.

* Class-conditional Mahalanobis (Lee et al., 2018, "A Simple Unified Framework
  for Detecting Out-of-Distribution Samples and Adversarial Attacks", NeurIPS,
  eq. 1-2): class means ``μ_c``, one covariance shared by all classes estimated
  from the class-centred features ``x_i - μ_{y_i}`` with Ledoit-Wolf shrinkage
  (:mod:`assay.server.ood.covariance`), and
  ``s(x) = min_c (x - μ_c)ᵀ Σ⁻¹ (x - μ_c)`` (the paper's confidence score is
  ``-s``). The paper's input pre-processing and layer ensemble are not used.
* Single Gaussian (Rippel et al., 2020, "Modeling the Distribution of Normal
  Data in Pre-Trained Deep Features for Anomaly Detection", ICPR, Sec. 3): one
  mean ``μ`` and a Ledoit-Wolf covariance of all reference features, and
  ``s(x) = (x - μ)ᵀ Σ⁻¹ (x - μ)``.
* KNN (Sun et al., 2022) lives in :mod:`assay.server.ood.knn` and ViM (Wang et
  al., 2022) in :mod:`assay.server.ood.vim`; both are re-exported here.

The squared distances are evaluated as ``‖x‖²_P - 2 xᵀPμ_c + ‖μ_c‖²_P`` after
subtracting the mean of the class means from both sides (which leaves distances
unchanged and limits cancellation), in query blocks so memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Final, Self

import numpy as np
import numpy.typing as npt

from assay.server.ood._common import (
    ROW_CHUNK,
    FittedProfile,
    FloatArray,
    IntArray,
    JsonDict,
    as_matrix,
)
from assay.server.ood._stored import ArrayLayout, StoredArrays, profile_meta
from assay.server.ood.covariance import ledoit_wolf, precision_from_covariance
from assay.server.ood.knn import DEFAULT_K, KNNProfile, fit_knn, knn_score
from assay.server.ood.patchcore import PatchMemory
from assay.server.ood.vim import ViMProfile, default_principal_dim, fit_vim, vim_score

__all__ = [
    "DEFAULT_K",
    "PROFILE_KINDS",
    "FittedProfile",
    "GaussianProfile",
    "KNNProfile",
    "MahalanobisProfile",
    "ViMProfile",
    "default_principal_dim",
    "fit_gaussian",
    "fit_knn",
    "fit_mahalanobis",
    "fit_vim",
    "gaussian_score",
    "knn_score",
    "mahalanobis_score",
    "profile_from_arrays",
    "score_features",
    "vim_score",
]


def _min_sq_mahalanobis(x: FloatArray, means: FloatArray, precision: FloatArray) -> FloatArray:
    """``min_c (x - μ_c)ᵀ P (x - μ_c)`` for N x D queries and C x D means."""
    origin = means.mean(axis=0)
    centred_means = means - origin
    means_p = centred_means @ precision
    means_norm = np.einsum("cd,cd->c", means_p, centred_means)
    out = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], ROW_CHUNK):
        block = x[start : start + ROW_CHUNK] - origin
        block_norm = np.einsum("nd,nd->n", block @ precision, block)
        d2 = block_norm[:, None] - 2.0 * (block @ means_p.T) + means_norm[None, :]
        out[start : start + ROW_CHUNK] = np.maximum(d2.min(axis=1), 0.0)
    return out


@dataclass(frozen=True, eq=False)
class MahalanobisProfile(StoredArrays):
    """Class means and a shared shrunk covariance (Lee et al., 2018).

    Attributes:
        classes: C distinct class labels, ascending (int64).
        means: C x D class means, row c for ``classes[c]``.
        covariance: D x D shared Ledoit-Wolf covariance of class-centred features.
        precision: D x D inverse of ``covariance`` (see `precision_from_covariance`).
        shrinkage: Ledoit-Wolf shrinkage δ.
    """

    KIND: ClassVar[str] = "mahalanobis"
    LAYOUT: ClassVar[ArrayLayout] = {
        "classes": (1, np.int64),
        "means": (2, np.float64),
        "covariance": (2, np.float64),
        "precision": (2, np.float64),
        "shrinkage": (0, np.float64),
    }
    classes: IntArray
    means: FloatArray
    covariance: FloatArray
    precision: FloatArray
    shrinkage: float

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self.means.shape[1])

    def meta(self) -> JsonDict:
        """Kind, version, feature dimension and number of classes."""
        return profile_meta(self.KIND, dim=self.dim, n_classes=int(self.classes.shape[0]))

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Self:
        """Rebuild from `to_arrays` / `meta` output; ValueError if inconsistent."""
        stored = cls.read_arrays(arrays, meta)
        classes, means = stored["classes"], stored["means"]
        cov, precision = stored["covariance"], stored["precision"]
        dim = means.shape[1]
        if (
            classes.shape[0] != means.shape[0]
            or cov.shape != (dim, dim)
            or (precision.shape != (dim, dim))
        ):
            raise ValueError(
                f"{cls.KIND} profile arrays disagree: classes {classes.shape}, means "
                f"{means.shape}, covariance {cov.shape}, precision {precision.shape}"
            )
        cls.check_meta_dim(meta, dim)
        return cls(classes, means, cov, precision, float(stored["shrinkage"]))


@dataclass(frozen=True, eq=False)
class GaussianProfile(StoredArrays):
    """One Gaussian over all reference features (Rippel et al., 2020).

    Attributes:
        mean: D-vector mean.
        covariance: D x D Ledoit-Wolf covariance.
        precision: D x D inverse of ``covariance``.
        shrinkage: Ledoit-Wolf shrinkage δ.
    """

    KIND: ClassVar[str] = "gaussian"
    LAYOUT: ClassVar[ArrayLayout] = {
        "mean": (1, np.float64),
        "covariance": (2, np.float64),
        "precision": (2, np.float64),
        "shrinkage": (0, np.float64),
    }
    mean: FloatArray
    covariance: FloatArray
    precision: FloatArray
    shrinkage: float

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self.mean.shape[0])

    def meta(self) -> JsonDict:
        """Kind, version and feature dimension."""
        return profile_meta(self.KIND, dim=self.dim)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Self:
        """Rebuild from `to_arrays` / `meta` output; ValueError if inconsistent."""
        stored = cls.read_arrays(arrays, meta)
        mean, cov, precision = stored["mean"], stored["covariance"], stored["precision"]
        dim = mean.shape[0]
        if cov.shape != (dim, dim) or precision.shape != (dim, dim):
            raise ValueError(
                f"{cls.KIND} profile arrays disagree: mean {mean.shape}, covariance "
                f"{cov.shape}, precision {precision.shape}"
            )
        cls.check_meta_dim(meta, dim)
        return cls(mean, cov, precision, float(stored["shrinkage"]))


def fit_mahalanobis(features: npt.ArrayLike, labels: npt.ArrayLike) -> MahalanobisProfile:
    """Fit class means and a shared Ledoit-Wolf covariance (Lee et al., 2018).

    Args:
        features: N x D in-distribution reference features (N ≥ 2), finite.
        labels: N integer class labels (any integers; every class seen gets a mean).

    Returns:
        The fitted profile.

    Raises:
        ValueError: On too few samples, mismatched lengths, non-integer labels,
            non-finite features or a degenerate covariance.
    """
    x = as_matrix(features, "features", min_rows=2)
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must be 1-D with {x.shape[0]} entries, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class ids, got dtype {y.dtype}")
    classes, inverse = np.unique(y.astype(np.int64), return_inverse=True)
    counts = np.bincount(inverse, minlength=classes.shape[0]).astype(np.float64)
    sums = np.zeros((classes.shape[0], x.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, x)
    means = sums / counts[:, None]
    covariance, shrinkage = ledoit_wolf(x - means[inverse], assume_centered=True)
    precision = precision_from_covariance(covariance)
    return MahalanobisProfile(classes, means, covariance, precision, shrinkage)


def mahalanobis_score(profile: MahalanobisProfile, features: npt.ArrayLike) -> FloatArray:
    """Minimum over classes of the squared Mahalanobis distance.

    Args:
        profile: From `fit_mahalanobis`.
        features: N x D query features.

    Returns:
        N scores ``min_c (x - μ_c)ᵀ Σ⁻¹ (x - μ_c)`` ≥ 0; higher = more anomalous.

    Raises:
        ValueError: On a dimension mismatch or non-finite features.
    """
    x = as_matrix(features, "features", cols=profile.dim)
    return _min_sq_mahalanobis(x, profile.means, profile.precision)


def fit_gaussian(features: npt.ArrayLike) -> GaussianProfile:
    """Fit one mean and a Ledoit-Wolf covariance (Rippel et al., 2020).

    Args:
        features: N x D in-distribution reference features (N ≥ 2), finite.

    Returns:
        The fitted profile.

    Raises:
        ValueError: On too few samples, non-finite features or a degenerate covariance.
    """
    x = as_matrix(features, "features", min_rows=2)
    mean = x.mean(axis=0)
    covariance, shrinkage = ledoit_wolf(x - mean, assume_centered=True)
    return GaussianProfile(mean, covariance, precision_from_covariance(covariance), shrinkage)


def gaussian_score(profile: GaussianProfile, features: npt.ArrayLike) -> FloatArray:
    """Squared Mahalanobis distance to the single Gaussian, ``(x - μ)ᵀ Σ⁻¹ (x - μ)``.

    Args:
        profile: From `fit_gaussian`.
        features: N x D query features.

    Returns:
        N scores ≥ 0; higher = more anomalous.

    Raises:
        ValueError: On a dimension mismatch or non-finite features.
    """
    x = as_matrix(features, "features", cols=profile.dim)
    return _min_sq_mahalanobis(x, profile.mean[None, :], profile.precision)


PROFILE_KINDS: Final[Mapping[str, type[FittedProfile]]] = MappingProxyType(
    {
        MahalanobisProfile.KIND: MahalanobisProfile,
        GaussianProfile.KIND: GaussianProfile,
        KNNProfile.KIND: KNNProfile,
        ViMProfile.KIND: ViMProfile,
        PatchMemory.KIND: PatchMemory,
    }
)
"""Fitted profile classes by their ``kind`` (as written in ``meta()``)."""


def profile_from_arrays(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Any:
    """Rebuild whichever fitted profile ``meta["kind"]`` names.

    Raises:
        ValueError: On an unknown kind or inconsistent arrays/meta.
    """
    kind = meta.get("kind")
    if not isinstance(kind, str) or kind not in PROFILE_KINDS:
        raise ValueError(f"unknown fitted profile kind {kind!r}; known: {sorted(PROFILE_KINDS)}")
    return PROFILE_KINDS[kind].from_arrays(arrays, meta)


def score_features(
    profile: object, features: npt.ArrayLike, logits: npt.ArrayLike | None = None
) -> FloatArray:
    """Score with any fitted profile (``logits`` are used by ViM only, optional there).

    Raises:
        ValueError: On an unknown profile type or bad inputs.
    """
    if isinstance(profile, MahalanobisProfile):
        return mahalanobis_score(profile, features)
    if isinstance(profile, GaussianProfile):
        return gaussian_score(profile, features)
    if isinstance(profile, KNNProfile):
        return knn_score(profile, features)
    if isinstance(profile, ViMProfile):
        return vim_score(profile, features, logits)
    if isinstance(profile, PatchMemory):
        raise ValueError("PatchCore scores feature maps: use patchcore.score_patches")
    raise ValueError(f"not a fitted OOD profile: {type(profile).__name__}")
