"""ViM: OOD score from the feature residual plus a virtual logit.

Wang et al., 2022, "ViM: Out-Of-Distribution with Virtual-logit Matching",
CVPR, Sec. 3. For a classifier head ``z = W x + b`` (W: K x D, b: K):

1. Origin ``u = -W⁺ b`` (Moore-Penrose pseudo-inverse), so that ``W u + b = 0``
   when W has full row rank: logits are linear in ``x - u``.
2. Principal subspace P: the top-``D_p`` eigenvectors of the second moment of
   the reference features about u, ``(1/N) Σ_i (x_i - u)(x_i - u)ᵀ``; its
   orthogonal complement is spanned by the remaining eigenvectors R
   (D x (D - D_p)).
3. Residual ``‖x^{P⊥}‖ = ‖Rᵀ (x - u)‖``.
4. Scale ``alpha = Σ_i max_k z_ik / Σ_i ‖x_i^{P⊥}‖`` over the reference set, so the
   virtual logit ``z_0 = alpha ‖x^{P⊥}‖`` matches the logits' scale on average.
5. The paper's ViM score is the softmax probability of the virtual logit among
   ``[z_0, z_1, …, z_K]``, ``p_0 = e^{z_0} / (e^{z_0} + Σ_k e^{z_k})``.

This module returns its log-odds, a strictly increasing function of ``p_0``
(identical ranking, AUROC and thresholds, but without saturation near 0 or 1)::

    s(x) = log(p_0 / (1 - p_0)) = alpha ‖x^{P⊥}‖ - log Σ_k exp(z_k)

i.e. virtual logit minus the (negative) energy of the real logits; higher =
more anomalous. ``D_p`` defaults to the paper's rule by feature dimension D:
1000 if D ≥ 1500, 512 if D ≥ 768, else D // 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from assay.server.ood._common import (
    FloatArray,
    JsonDict,
    as_matrix,
    as_vector,
    positive_int,
)
from assay.server.ood._stored import ArrayLayout, StoredArrays, profile_meta
from assay.server.stats.softmax import logsumexp

__all__ = ["ViMProfile", "default_principal_dim", "fit_vim", "vim_score"]


def default_principal_dim(dim: int) -> int:
    """The paper's principal-space dimension for feature dimension ``dim``."""
    if dim >= 1500:
        return 1000
    if dim >= 768:
        return 512
    return max(dim // 2, 1)


@dataclass(frozen=True, eq=False)
class ViMProfile(StoredArrays):
    """Classifier head, origin, residual basis and alpha (Wang et al., 2022).

    Attributes:
        weight: K x D final-layer weight W.
        bias: K final-layer bias b.
        origin: D-vector u = -W⁺ b.
        residual_basis: D x (D - D_p) orthonormal basis R of the residual space.
        alpha: Virtual-logit scale alpha > 0.
    """

    KIND: ClassVar[str] = "vim"
    LAYOUT: ClassVar[ArrayLayout] = {
        "weight": (2, np.float64),
        "bias": (1, np.float64),
        "origin": (1, np.float64),
        "residual_basis": (2, np.float64),
        "alpha": (0, np.float64),
    }
    weight: FloatArray
    bias: FloatArray
    origin: FloatArray
    residual_basis: FloatArray
    alpha: float

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self.weight.shape[1])

    @property
    def principal_dim(self) -> int:
        """Principal-space dimension D_p."""
        return self.dim - int(self.residual_basis.shape[1])

    def meta(self) -> JsonDict:
        """Kind, version, feature dimension, classes and principal dimension."""
        return profile_meta(
            self.KIND,
            dim=self.dim,
            n_classes=int(self.weight.shape[0]),
            principal_dim=self.principal_dim,
        )

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Self:
        """Rebuild from `to_arrays` / `meta` output; ValueError if inconsistent."""
        stored = cls.read_arrays(arrays, meta)
        weight, bias, origin = stored["weight"], stored["bias"], stored["origin"]
        basis = stored["residual_basis"]
        k, d = weight.shape
        if bias.shape != (k,) or origin.shape != (d,) or basis.shape[0] != d:
            raise ValueError(
                f"{cls.KIND} profile arrays disagree: weight {weight.shape}, bias "
                f"{bias.shape}, origin {origin.shape}, residual_basis {basis.shape}"
            )
        if meta.get("dim") != d or meta.get("principal_dim") != d - basis.shape[1]:
            raise ValueError(f"{cls.KIND} meta {dict(meta)!r} disagrees with the arrays")
        return cls(weight, bias, origin, basis, float(stored["alpha"]))


def _head(weight: npt.ArrayLike, bias: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Validated K x D weight and K bias."""
    w: FloatArray = as_matrix(weight, "weight", min_rows=1)
    b = as_vector(bias, "bias", size=w.shape[0])
    return w, b


def fit_vim(
    features: npt.ArrayLike,
    weight: npt.ArrayLike,
    bias: npt.ArrayLike,
    *,
    principal_dim: int | None = None,
) -> ViMProfile:
    """Fit ViM's origin, residual subspace and alpha on reference features.

    Args:
        features: N x D in-distribution reference features (N ≥ 2), finite.
        weight: K x D weight of the final linear layer (logits = features @ Wᵀ + b).
        bias: K bias of the final linear layer.
        principal_dim: D_p, with 1 ≤ D_p < D; default `default_principal_dim(D)`.

    Returns:
        The fitted profile.

    Raises:
        ValueError: On too few samples, mismatched dimensions, non-finite values,
            a bad D_p, a zero mean residual or a non-positive alpha.
    """
    w, b = _head(weight, bias)
    x: FloatArray = as_matrix(features, "features", cols=w.shape[1], min_rows=2)
    d = x.shape[1]
    if d < 2:
        raise ValueError("ViM needs a feature dimension of at least 2")
    dp = default_principal_dim(d) if principal_dim is None else positive_int(principal_dim, "D_p")
    if dp >= d:
        raise ValueError(f"principal_dim must be < the feature dimension {d}, got {dp}")
    origin: FloatArray = -(np.linalg.pinv(w) @ b)
    centred = x - origin
    second_moment = (centred.T @ centred) / x.shape[0]
    _, eigenvectors = np.linalg.eigh((second_moment + second_moment.T) / 2.0)
    basis = np.ascontiguousarray(eigenvectors[:, : d - dp])  # eigh sorts ascending
    residual = np.linalg.norm(centred @ basis, axis=1)
    mean_residual = float(residual.mean())
    if not mean_residual > 0.0:
        raise ValueError(
            "reference features have no residual outside the principal subspace; "
            "lower principal_dim"
        )
    mean_max_logit = float((x @ w.T + b).max(axis=1).mean())
    alpha = mean_max_logit / mean_residual
    if not alpha > 0.0:
        raise ValueError(
            f"ViM needs a positive mean max logit on the reference set, got {mean_max_logit:.6g}"
        )
    return ViMProfile(w, b, origin, basis, alpha)


def vim_score(
    profile: ViMProfile, features: npt.ArrayLike, logits: npt.ArrayLike | None = None
) -> FloatArray:
    """ViM log-odds ``alpha ‖Rᵀ(x - u)‖ - log Σ_k exp(z_k)``.

    Args:
        profile: From `fit_vim`.
        features: N x D query features.
        logits: The model's N x K logits for the same inputs; computed as
            ``features @ Wᵀ + b`` when omitted.

    Returns:
        N scores; higher = more anomalous.

    Raises:
        ValueError: On mismatched dimensions or non-finite values.
    """
    x = as_matrix(features, "features", cols=profile.dim)
    if logits is None:
        z: FloatArray = x @ profile.weight.T + profile.bias
    else:
        z = as_matrix(logits, "logits", cols=profile.weight.shape[0])
        if z.shape[0] != x.shape[0]:
            raise ValueError(f"logits have {z.shape[0]} rows but features have {x.shape[0]}")
    residual = np.linalg.norm((x - profile.origin) @ profile.residual_basis, axis=1)
    result: FloatArray = profile.alpha * residual - logsumexp(z)
    return result
