"""Versioned OOD profile of one model: fitted scorers, thresholds, holdout scores.

A profile is a JSON document and a set of arrays. The profile store keeps both
in one row of the server's store; exported to files (`save_profile`, and the
layout of servers before the store) they are ``<stem>.npz`` and ``<stem>.json``:

* ``<stem>.npz`` (``np.savez``, no pickled objects, read with
  ``allow_pickle=False``) holds every array, keyed ``<scorer>.holdout_scores``
  (float64 holdout scores) and ``<scorer>.profile.<array>`` (the fitted
  profile's ``to_arrays()``). Scorer names match ``[A-Za-z0-9_-]+``.
* ``<stem>.json`` (schema ``assay.ood.profile/v1``)::

    {"schema": "assay.ood.profile/v1",
     "model": {"name": str, "version": str, "fingerprint": str},
     "created_at": ISO-8601 str, "target_tpr": float,
     "arrays_sha256": hex digest of the npz contents (names, dtypes, shapes, bytes),
     "scorers": {<scorer>: {"kind": str, "params": {...}, "meta": {...} | null,
                            "threshold": float,
                            "holdout": {"n", "mean", "std", "min", "max",
                                        "kept_fraction", "quantiles": {"0.5", ...}}}}}

``meta`` is the fitted profile's ``meta()`` (null for stateless logit scorers,
whose ``kind`` is a key of `LOGIT_SCORERS` and whose ``params`` such as the
temperature are kept in ``params``). The ``holdout`` summary is informative
and recomputed on save. Floats are written with Python's shortest round-trip
repr, so a save/load round trip is bit-exact. A file whose schema version is
newer than this code's is refused with ValueError.

A profile is bound to its model version by the model's fingerprint
(`assay.server.profiles.fingerprint`); `OOD_PROFILES` is the format the shared
`assay.server.profiles.ProfileStore` keeps them in, one row per model version
(legacy files: ``<root>/<model>/<version>/profile.{npz,json}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from assay.server.ood._common import FittedProfile, FloatArray, JsonDict, as_vector
from assay.server.ood.feature_scorers import PROFILE_KINDS, profile_from_arrays
from assay.server.ood.logit_scorers import LOGIT_SCORERS
from assay.server.ood.thresholds import kept_fraction
from assay.server.profiles.fingerprint import array_digest
from assay.server.profiles.legacy import read_files, write_files
from assay.server.profiles.store import Arrays, Document, ProfileFormat

__all__ = [
    "OOD_PROFILES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "ModelProfile",
    "ScorerEntry",
    "load_profile",
    "save_profile",
]

SCHEMA_VERSION: Final = 1
SCHEMA: Final = f"assay.ood.profile/v{SCHEMA_VERSION}"
_SCHEMA_RE: Final = re.compile(r"^assay\.ood\.profile/v(\d+)$")
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_SUMMARY_QUANTILES: Final = (0.5, 0.9, 0.95, 0.99)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, eq=False)
class ScorerEntry:
    """One scorer of a model profile.

    Attributes:
        kind: A `LOGIT_SCORERS` key (stateless) or a fitted profile's ``KIND``.
        profile: The fitted profile, or None for a stateless logit scorer.
        threshold: Decision threshold; ``is_ood = score > threshold``.
        holdout_scores: In-distribution holdout scores the threshold came from.
        params: JSON-able scorer parameters (e.g. ``{"temperature": 1.0}``).
    """

    kind: str
    profile: FittedProfile | None
    threshold: float
    holdout_scores: FloatArray
    params: JsonDict = field(default_factory=dict)

    def is_ood(self, scores: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """``scores > threshold``."""
        return np.asarray(scores, dtype=np.float64) > self.threshold


@dataclass(frozen=True, eq=False)
class ModelProfile:
    """Everything needed to score one model version's inputs for OOD."""

    model_name: str
    model_version: str
    fingerprint: str
    target_tpr: float
    scorers: Mapping[str, ScorerEntry]
    created_at: str = field(default_factory=_utc_now)


def _stem(path: Path) -> Path:
    """``path`` without a trailing .npz/.json."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".npz", ".json") else path


def _summary(scores: FloatArray, threshold: float) -> JsonDict:
    quantiles = np.quantile(scores, _SUMMARY_QUANTILES)
    return {
        "n": int(scores.shape[0]),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "min": float(scores.min()),
        "max": float(scores.max()),
        "kept_fraction": kept_fraction(scores, threshold),
        "quantiles": {str(q): float(v) for q, v in zip(_SUMMARY_QUANTILES, quantiles, strict=True)},
    }


def _entry_json(name: str, entry: ScorerEntry, arrays: dict[str, np.ndarray]) -> JsonDict:
    """Validate one entry, add its arrays to ``arrays`` and return its JSON."""
    if not _NAME_RE.match(name):
        raise ValueError(f"scorer name {name!r} must match {_NAME_RE.pattern}")
    if not np.isfinite(entry.threshold):
        raise ValueError(f"scorer {name!r} threshold must be finite, got {entry.threshold!r}")
    holdout = as_vector(entry.holdout_scores, f"scorer {name!r} holdout_scores")
    if holdout.shape[0] == 0:
        raise ValueError(f"scorer {name!r} holdout_scores is empty")
    meta: JsonDict | None = None
    if entry.profile is None:
        if entry.kind not in LOGIT_SCORERS:
            raise ValueError(f"scorer {name!r} kind {entry.kind!r} needs a fitted profile")
    else:
        meta = entry.profile.meta()
        if entry.kind != meta.get("kind") or entry.kind not in PROFILE_KINDS:
            raise ValueError(f"scorer {name!r} kind {entry.kind!r} != profile {meta.get('kind')!r}")
        for key, value in entry.profile.to_arrays().items():
            array = np.asarray(value)
            if not _NAME_RE.match(key) or array.dtype.hasobject:
                raise ValueError(f"scorer {name!r} array {key!r} has a bad name or object dtype")
            arrays[f"{name}.profile.{key}"] = array
    arrays[f"{name}.holdout_scores"] = holdout
    return {
        "kind": entry.kind,
        "params": dict(entry.params),
        "meta": meta,
        "threshold": float(entry.threshold),
        "holdout": _summary(holdout, float(entry.threshold)),
    }


def profile_document(profile: ModelProfile) -> tuple[Document, Arrays]:
    """The JSON document and the arrays of a profile, validated.

    Raises:
        ValueError: On bad scorer names, kinds, thresholds or arrays.
    """
    arrays: Arrays = {}
    scorers = {name: _entry_json(name, e, arrays) for name, e in profile.scorers.items()}
    document = {
        "schema": SCHEMA,
        "model": {
            "name": profile.model_name,
            "version": profile.model_version,
            "fingerprint": profile.fingerprint,
        },
        "created_at": profile.created_at,
        "target_tpr": float(profile.target_tpr),
        "arrays_sha256": array_digest(arrays, header=SCHEMA),
        "scorers": scorers,
    }
    return document, arrays


def save_profile(path: Path, profile: ModelProfile) -> None:
    """Write ``<path>.npz`` and ``<path>.json`` (the JSON last, atomically).

    Raises:
        ValueError: On bad scorer names, kinds, thresholds or arrays, or
            non-JSON-able params/meta (nothing is written then).
    """
    document, arrays = profile_document(profile)
    write_files(_stem(path), document, arrays)


def _check_schema(document: Any) -> None:
    if not isinstance(document, dict):
        raise ValueError("profile JSON must be an object")
    match = _SCHEMA_RE.match(str(document.get("schema", "")))
    if match is None:
        raise ValueError(f"not an assay OOD profile: schema {document.get('schema')!r}")
    if int(match.group(1)) > SCHEMA_VERSION:
        raise ValueError(
            f"profile schema {document['schema']!r} is newer than this code supports "
            f"({SCHEMA}); upgrade assay to read it"
        )


def _entry_from_json(name: str, spec: Any, arrays: Arrays) -> ScorerEntry:
    prefix = f"{name}.profile."
    fitted = None
    if spec["meta"] is not None:
        own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        fitted = profile_from_arrays(own, spec["meta"])
        if spec["kind"] != fitted.KIND:
            raise ValueError(f"scorer {name!r} kind {spec['kind']!r} != {fitted.KIND!r}")
    elif spec["kind"] not in LOGIT_SCORERS:
        raise ValueError(f"scorer {name!r} has unknown stateless kind {spec['kind']!r}")
    return ScorerEntry(
        kind=spec["kind"],
        profile=fitted,
        threshold=float(spec["threshold"]),
        holdout_scores=arrays[f"{name}.holdout_scores"],
        params=dict(spec["params"]),
    )


def profile_from_document(document: Any, arrays: Arrays | None) -> ModelProfile:
    """Rebuild a profile from `profile_document`'s output.

    Raises:
        ValueError: On a newer or unknown schema, no arrays or arrays that do not
            match the document, unknown scorer kinds or inconsistent arrays.
    """
    _check_schema(document)
    if arrays is None:
        raise ValueError("the OOD profile has no array file (.npz)")
    if array_digest(arrays, header=SCHEMA) != document.get("arrays_sha256"):
        raise ValueError("the profile's arrays do not match its JSON (arrays_sha256 differs)")
    try:
        scorers = {
            name: _entry_from_json(name, spec, arrays) for name, spec in document["scorers"].items()
        }
        model = document["model"]
        return ModelProfile(
            model_name=model["name"],
            model_version=model["version"],
            fingerprint=model["fingerprint"],
            target_tpr=float(document["target_tpr"]),
            scorers=scorers,
            created_at=_checked_time(document["created_at"]),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"the OOD profile JSON is malformed: missing or bad {exc}") from None


def _checked_time(value: object) -> str:
    """The stored ISO-8601 fit time, refused at load unless it parses with a UTC offset."""
    if not isinstance(value, str):
        raise TypeError(f"created_at must be an ISO-8601 string, not {type(value).__name__}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"the OOD profile's created_at {value[:40]!r} is not ISO-8601") from None
    if moment.tzinfo is None:
        raise ValueError(f"the OOD profile's created_at {value[:40]!r} has no UTC offset")
    return value


def load_profile(path: Path) -> ModelProfile:
    """Read a profile written by `save_profile`.

    Raises:
        ValueError: See `profile_from_document`; also on a file that is not JSON.
        FileNotFoundError: If either file is missing.
    """
    stem = _stem(path)
    document, arrays = read_files(stem)
    if arrays is None:
        raise FileNotFoundError(f"{stem.with_name(stem.name + '.npz')} does not exist")
    return profile_from_document(document, arrays)


OOD_PROFILES: Final = ProfileFormat[ModelProfile](
    kind="ood",
    title="OOD profile",
    owner="model",
    stem="profile",
    key=lambda profile: (profile.model_name, profile.model_version),
    dump=profile_document,
    parse=profile_from_document,
    remedy=(
        "refit it (FitProfile, `assay ood fit`) or delete it "
        "(DeleteProfile, `assay ood delete-profile`)"
    ),
)
"""How the shared profile store keeps OOD profiles, one per model version."""
