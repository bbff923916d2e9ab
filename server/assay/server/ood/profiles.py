"""Versioned on-disk OOD profile of one model: fitted scorers, thresholds, holdout scores.

A profile is two files next to each other, ``<stem>.npz`` and ``<stem>.json``:

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

**Binding a profile to a model version.** `fingerprint` hashes the model's
outputs on a fixed probe input (for instance the logits and features of a fixed
set of images): identical weights and pre-processing give the same fingerprint,
so a service can refuse a profile whose fingerprint differs from the loaded
model's. Values are rounded to ``decimals`` places first so that backend noise
(CPU vs GPU, batch size) below that precision does not change the hash; a value
that straddles a rounding boundary can still flip it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
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

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "ModelProfile",
    "ScorerEntry",
    "fingerprint",
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


def _paths(path: Path) -> tuple[Path, Path]:
    """``(<stem>.npz, <stem>.json)``; a trailing .npz/.json on ``path`` is dropped."""
    path = Path(path)
    if path.suffix in (".npz", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".npz"), path.with_name(path.name + ".json")


def _digest(arrays: Mapping[str, np.ndarray], *, header: str) -> str:
    """sha256 over sorted names, dtypes, shapes and C-order bytes."""
    digest = hashlib.sha256(header.encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def fingerprint(outputs: Mapping[str, npt.ArrayLike], *, decimals: int = 4) -> str:
    """Stable hash of a model's outputs on a fixed probe, ``"sha256:<hex>"``.

    Each output is rounded to ``decimals`` places in float64, cast to
    little-endian float32 (``-0.0`` normalised to ``0.0``) and hashed with its
    name and shape, in name order.

    Raises:
        ValueError: On no outputs or non-finite values.
    """
    if not outputs:
        raise ValueError("fingerprint needs at least one output array")
    rounded: dict[str, np.ndarray] = {}
    for name, values in outputs.items():
        array = np.asarray(values, dtype=np.float64)
        if not np.isfinite(array).all():
            raise ValueError(f"output {name!r} contains NaN or infinite values")
        rounded[name] = (np.round(array, decimals) + 0.0).astype("<f4")
    return "sha256:" + _digest(rounded, header=f"assay.ood.fingerprint/v1/{decimals}")


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


def _write_atomic(path: Path, write: Any) -> None:
    """Write via a temporary file in the same directory, then rename."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_profile(path: Path, profile: ModelProfile) -> None:
    """Write ``<path>.npz`` and ``<path>.json`` (the JSON last, atomically).

    Raises:
        ValueError: On bad scorer names, kinds, thresholds or arrays, or
            non-JSON-able params/meta.
    """
    arrays: dict[str, np.ndarray] = {}
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
        "arrays_sha256": _digest(arrays, header=SCHEMA),
        "scorers": scorers,
    }
    try:
        text = json.dumps(document, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"profile is not JSON-serialisable: {exc}") from None
    npz_path, json_path = _paths(path)
    savez: Callable[..., None] = np.savez  # mypy: ``**arrays`` could shadow its keywords
    _write_atomic(npz_path, lambda handle: savez(handle, **arrays))
    _write_atomic(json_path, lambda handle: handle.write(text.encode()))


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


def load_profile(path: Path) -> ModelProfile:
    """Read a profile written by `save_profile`.

    Raises:
        ValueError: On a newer or unknown schema, an array file that does not match
            its JSON, unknown scorer kinds or inconsistent arrays.
        FileNotFoundError: If either file is missing.
    """
    npz_path, json_path = _paths(path)
    try:
        document = json.loads(json_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{json_path} is not valid JSON: {exc}") from None
    _check_schema(document)
    with np.load(npz_path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    if _digest(arrays, header=SCHEMA) != document.get("arrays_sha256"):
        raise ValueError(f"{npz_path} does not match {json_path} (arrays_sha256 differs)")
    scorers: dict[str, ScorerEntry] = {}
    try:
        for name, spec in document["scorers"].items():
            prefix = f"{name}.profile."
            fitted = None
            if spec["meta"] is not None:
                own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
                fitted = profile_from_arrays(own, spec["meta"])
                if spec["kind"] != fitted.KIND:
                    raise ValueError(f"scorer {name!r} kind {spec['kind']!r} != {fitted.KIND!r}")
            elif spec["kind"] not in LOGIT_SCORERS:
                raise ValueError(f"scorer {name!r} has unknown stateless kind {spec['kind']!r}")
            scorers[name] = ScorerEntry(
                kind=spec["kind"],
                profile=fitted,
                threshold=float(spec["threshold"]),
                holdout_scores=arrays[f"{name}.holdout_scores"],
                params=dict(spec["params"]),
            )
        model = document["model"]
        return ModelProfile(
            model_name=model["name"],
            model_version=model["version"],
            fingerprint=model["fingerprint"],
            target_tpr=float(document["target_tpr"]),
            scorers=scorers,
            created_at=document["created_at"],
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{json_path} is malformed: missing or bad {exc}") from None
