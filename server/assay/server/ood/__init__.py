"""Out-of-distribution / anomaly scoring for image classifiers.

Domain code only: numpy in, dataclasses out; nothing here imports grpc. Every
score is **higher = more anomalous**.

* :mod:`~assay.server.ood.logit_scorers`: stateless scores from logits (MSP,
  MaxLogit, Energy, Entropy).
* :mod:`~assay.server.ood.feature_scorers`: scores fitted on in-distribution
  features (class-conditional Mahalanobis, single Gaussian, KNN, ViM). Each has
  ``fit_*(...) -> *Profile`` and ``*_score(profile, features, ...)``.
* :mod:`~assay.server.ood.covariance`: Ledoit-Wolf shrinkage in numpy.
* :mod:`~assay.server.ood.thresholds`: thresholds at a target TPR and tail
  fractions (empirical p-values) against an in-distribution holdout.
* :mod:`~assay.server.ood.profiles`: the versioned on-disk model profile
  (``.npz`` + ``.json``, schema ``assay.ood.profile/v1``), kept by the shared
  :mod:`assay.server.profiles` store.
"""

from assay.server.ood.covariance import ledoit_wolf, precision_from_covariance
from assay.server.ood.feature_scorers import (
    PROFILE_KINDS,
    FittedProfile,
    GaussianProfile,
    KNNProfile,
    MahalanobisProfile,
    ViMProfile,
    fit_gaussian,
    fit_knn,
    fit_mahalanobis,
    fit_vim,
    gaussian_score,
    knn_score,
    mahalanobis_score,
    profile_from_arrays,
    score_features,
    vim_score,
)
from assay.server.ood.logit_scorers import (
    LOGIT_SCORERS,
    energy_score,
    entropy_score,
    max_logit_score,
    msp_score,
)
from assay.server.ood.profiles import (
    SCHEMA,
    ModelProfile,
    ScorerEntry,
    load_profile,
    save_profile,
)
from assay.server.ood.thresholds import fit_threshold, kept_fraction, tail_fraction

__all__ = [
    "LOGIT_SCORERS",
    "PROFILE_KINDS",
    "SCHEMA",
    "FittedProfile",
    "GaussianProfile",
    "KNNProfile",
    "MahalanobisProfile",
    "ModelProfile",
    "ScorerEntry",
    "ViMProfile",
    "energy_score",
    "entropy_score",
    "fit_gaussian",
    "fit_knn",
    "fit_mahalanobis",
    "fit_threshold",
    "fit_vim",
    "gaussian_score",
    "kept_fraction",
    "knn_score",
    "ledoit_wolf",
    "load_profile",
    "mahalanobis_score",
    "max_logit_score",
    "msp_score",
    "precision_from_covariance",
    "profile_from_arrays",
    "save_profile",
    "score_features",
    "tail_fraction",
    "vim_score",
]
