"""OOD scorers, thresholds and profiles against direct numpy / scipy / scikit-learn."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis
from scipy.special import logsumexp, softmax
from scipy.stats import entropy
from sklearn.covariance import ledoit_wolf as sk_ledoit_wolf
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from assay.server.ood import (
    PROFILE_KINDS,
    GaussianProfile,
    KNNProfile,
    MahalanobisProfile,
    ModelProfile,
    ScorerEntry,
    ViMProfile,
    energy_score,
    entropy_score,
    fit_gaussian,
    fit_knn,
    fit_mahalanobis,
    fit_threshold,
    fit_vim,
    gaussian_score,
    kept_fraction,
    knn_score,
    ledoit_wolf,
    load_profile,
    mahalanobis_score,
    max_logit_score,
    msp_score,
    profile_from_arrays,
    save_profile,
    score_features,
    tail_fraction,
    vim_score,
)
from assay.server.ood.vim import default_principal_dim
from assay.server.profiles import fingerprint


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _classes(seed: int = 0, n: int = 400, d: int = 12, k: int = 4) -> tuple[np.ndarray, ...]:
    """Class-conditional Gaussian features with correlated noise."""
    rng = _rng(seed)
    centres = rng.normal(scale=3.0, size=(k, d))
    mixing = rng.normal(size=(d, d)) / math.sqrt(d)
    labels = rng.integers(0, k, size=n)
    x = centres[labels] + rng.normal(size=(n, d)) @ mixing
    return x, labels, centres, mixing


# ---------------------------------------------------------------- logit scorers


@pytest.mark.parametrize("temperature", [1.0, 2.5, 0.3])
def test_logit_scorers_match_scipy(temperature: float) -> None:
    z = _rng(1).normal(scale=4.0, size=(64, 10))
    p = softmax(z / temperature, axis=1)
    np.testing.assert_allclose(msp_score(z, temperature), -p.max(axis=1), rtol=1e-12)
    np.testing.assert_allclose(
        energy_score(z, temperature), -temperature * logsumexp(z / temperature, axis=1), rtol=1e-12
    )
    np.testing.assert_allclose(entropy_score(z, temperature), entropy(p, axis=1), atol=1e-12)
    np.testing.assert_array_equal(max_logit_score(z), -z.max(axis=1))
    assert msp_score(z, temperature).dtype == np.float64


def test_logit_scorers_are_stable_for_huge_logits() -> None:
    z = np.array([[1e4, -1e4, 0.0], [800.0, 799.0, -5e3]], dtype=np.float32)
    for scores in (msp_score(z), energy_score(z), entropy_score(z), max_logit_score(z)):
        assert np.isfinite(scores).all()
    np.testing.assert_allclose(energy_score(z), -logsumexp(z.astype(np.float64), axis=1))
    assert entropy_score(z)[0] == 0.0


def test_uniform_logits_are_most_anomalous() -> None:
    z = np.array([[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0]])
    assert msp_score(z)[0] > msp_score(z)[1]
    np.testing.assert_allclose(entropy_score(z)[0], math.log(4))


@pytest.mark.parametrize(
    ("logits", "match"),
    [
        (np.zeros(5), "2-D"),
        (np.array([[0.0, np.nan]]), "NaN or infinite"),
        (np.array([[0.0, np.inf]]), "NaN or infinite"),
        (np.zeros((3, 0)), "no columns"),
        ([["a", "b"]], "numeric"),
    ],
)
def test_logit_scorers_reject_bad_logits(logits: Any, match: str) -> None:
    for scorer in (msp_score, max_logit_score, energy_score, entropy_score):
        with pytest.raises(ValueError, match=match):
            scorer(logits)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_logit_scorers_reject_bad_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        energy_score(np.zeros((2, 3)), temperature)


# ---------------------------------------------------------------- covariance


@pytest.mark.parametrize(("n", "d"), [(200, 10), (15, 40), (50, 1)])
@pytest.mark.parametrize("assume_centered", [False, True])
def test_ledoit_wolf_matches_sklearn(n: int, d: int, assume_centered: bool) -> None:
    x = _rng(2).normal(size=(n, d)) @ _rng(3).normal(size=(d, d)) + 1.5
    cov, shrinkage = ledoit_wolf(x, assume_centered=assume_centered)
    sk_cov, sk_shrinkage = sk_ledoit_wolf(x, assume_centered=assume_centered)
    np.testing.assert_allclose(cov, sk_cov, rtol=1e-10, atol=1e-12)
    assert shrinkage == pytest.approx(sk_shrinkage, rel=1e-10, abs=1e-15)


# ---------------------------------------------------------------- Mahalanobis / Gaussian


def test_mahalanobis_matches_scipy_and_sklearn() -> None:
    x, labels, _, _ = _classes()
    profile = fit_mahalanobis(x, labels)
    classes = np.unique(labels)
    means = np.stack([x[labels == c].mean(axis=0) for c in classes])
    np.testing.assert_array_equal(profile.classes, classes)
    np.testing.assert_allclose(profile.means, means, rtol=1e-12)
    sk_cov, _ = sk_ledoit_wolf(x - means[np.searchsorted(classes, labels)], assume_centered=True)
    np.testing.assert_allclose(profile.covariance, sk_cov, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(profile.precision @ profile.covariance, np.eye(12), atol=1e-9)
    queries = _rng(4).normal(scale=4.0, size=(30, 12))
    expected = [min(mahalanobis(q, m, profile.precision) ** 2 for m in means) for q in queries]
    np.testing.assert_allclose(mahalanobis_score(profile, queries), expected, rtol=1e-9)


def test_gaussian_matches_scipy_and_sklearn() -> None:
    x, _, _, _ = _classes(seed=5)
    profile = fit_gaussian(x)
    sk_cov, sk_shrinkage = sk_ledoit_wolf(x)
    np.testing.assert_allclose(profile.covariance, sk_cov, rtol=1e-10, atol=1e-12)
    assert profile.shrinkage == pytest.approx(sk_shrinkage, rel=1e-10)
    queries = _rng(6).normal(scale=3.0, size=(25, 12))
    expected = [mahalanobis(q, x.mean(axis=0), profile.precision) ** 2 for q in queries]
    np.testing.assert_allclose(gaussian_score(profile, queries), expected, rtol=1e-9)


# ---------------------------------------------------------------- KNN


@pytest.mark.parametrize("k", [1, 5, 17])
@pytest.mark.parametrize(("query_chunk", "bank_chunk"), [(7, 13), (1, 300), (1024, 8192)])
def test_knn_matches_brute_force(k: int, query_chunk: int, bank_chunk: int) -> None:
    bank = _rng(7).normal(size=(300, 24))
    queries = _rng(8).normal(size=(50, 24)) + 0.3
    normed = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    normed_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    distances, _ = NearestNeighbors(n_neighbors=k).fit(normed).kneighbors(normed_q)
    profile = fit_knn(bank, k=k)
    scores = knn_score(profile, queries, query_chunk=query_chunk, bank_chunk=bank_chunk)
    np.testing.assert_allclose(scores, distances[:, -1], rtol=1e-5, atol=1e-5)


def test_knn_default_k_and_bank() -> None:
    bank = _rng(9).normal(size=(30, 4))
    profile = fit_knn(bank)
    assert profile.k == 30
    assert fit_knn(_rng(9).normal(size=(80, 4))).k == 50
    assert profile.bank.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(profile.bank, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="exceeds"):
        fit_knn(bank, k=31)
    with pytest.raises(ValueError, match="positive integer"):
        fit_knn(bank, k=0)
    with pytest.raises(ValueError, match="query_chunk"):
        knn_score(profile, bank, query_chunk=0)


# ---------------------------------------------------------------- ViM


def _vim_data(seed: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features near a 6-dimensional subspace of R^16 and a random head."""
    rng = _rng(seed)
    basis = np.linalg.qr(rng.normal(size=(16, 6)))[0]
    x = rng.normal(scale=3.0, size=(300, 6)) @ basis.T + 0.1 * rng.normal(size=(300, 16)) + 1.0
    weight, bias = rng.normal(size=(5, 16)), rng.normal(size=5) + 4.0
    return x, weight, bias


def test_vim_matches_formula() -> None:
    x, weight, bias = _vim_data()
    profile = fit_vim(x, weight, bias, principal_dim=6)
    origin = -np.linalg.pinv(weight) @ bias
    centred = x - origin
    _, vectors = np.linalg.eigh(np.cov(centred.T, bias=True) + np.outer(*[centred.mean(0)] * 2))
    principal = vectors[:, -6:]
    project_out = np.eye(16) - principal @ principal.T
    logits = x @ weight.T + bias
    alpha = logits.max(axis=1).mean() / np.linalg.norm(centred @ project_out, axis=1).mean()
    queries = np.r_[x[:30] + 0.2 * _rng(11).normal(size=(30, 16)), _rng(12).normal(size=(10, 16))]
    q_logits = queries @ weight.T + bias
    residual = np.linalg.norm((queries - origin) @ project_out, axis=1)
    expected = alpha * residual - logsumexp(q_logits, axis=1)
    assert profile.alpha == pytest.approx(alpha, rel=1e-9)
    np.testing.assert_allclose(profile.origin, origin, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(vim_score(profile, queries), expected, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(vim_score(profile, queries, q_logits), expected, rtol=1e-8)
    # The paper's score is softmax([alpha·res, logits])[0]; ours is its log-odds.
    p0 = softmax(np.column_stack([alpha * residual, q_logits]), axis=1)[:, 0]
    moderate = (p0 > 1e-6) & (p0 < 1 - 1e-6)
    assert moderate.sum() >= 5
    np.testing.assert_allclose(
        vim_score(profile, queries)[moderate], np.log(p0 / (1 - p0))[moderate], rtol=1e-6
    )


def test_vim_off_subspace_scores_higher() -> None:
    x, weight, bias = _vim_data()
    profile = fit_vim(x, weight, bias, principal_dim=6)
    on = x[:20]
    offset = profile.residual_basis @ _rng(12).normal(size=profile.residual_basis.shape[1])
    off = on + 5.0 * offset / np.linalg.norm(offset)
    assert (vim_score(profile, off) > vim_score(profile, on)).all()


def test_vim_default_dim_and_bad_inputs() -> None:
    assert [default_principal_dim(d) for d in (2048, 1500, 1280, 768, 512, 3)] == [
        1000,
        1000,
        512,
        512,
        256,
        1,
    ]
    x, weight, bias = _vim_data()
    assert fit_vim(x, weight, bias).principal_dim == 8
    with pytest.raises(ValueError, match="principal_dim must be <"):
        fit_vim(x, weight, bias, principal_dim=16)
    with pytest.raises(ValueError, match="bias must have 5 entries"):
        fit_vim(x, weight, bias[:3])
    with pytest.raises(ValueError, match="features must have 16 columns"):
        fit_vim(x[:, :8], weight, bias)
    with pytest.raises(ValueError, match="positive mean max logit"):
        fit_vim(x, weight, bias - 1e3)
    profile = fit_vim(x, weight, bias)
    with pytest.raises(ValueError, match="logits must have 5 columns"):
        vim_score(profile, x, np.zeros((300, 4)))
    with pytest.raises(ValueError, match="rows"):
        vim_score(profile, x, np.zeros((3, 5)))


# ---------------------------------------------------------------- all fitted scorers


def _fit_all(x: np.ndarray, labels: np.ndarray, head: tuple[np.ndarray, np.ndarray]) -> list[Any]:
    return [
        fit_mahalanobis(x, labels),
        fit_gaussian(x),
        fit_knn(x, k=10),
        fit_vim(x, *head, principal_dim=4),
    ]


def test_every_fitted_scorer_separates_shifted_data() -> None:
    x, labels, _, mixing = _classes(seed=13, n=600)
    head = (_rng(14).normal(size=(4, 12)), np.full(4, 5.0))
    test_in, _, _, _ = _classes(seed=13, n=900)
    test_in = test_in[600:]
    test_out = _rng(15).normal(scale=3.0, size=(300, 12)) @ mixing + 6.0
    truth = np.r_[np.zeros(len(test_in)), np.ones(len(test_out))]
    for profile in _fit_all(x, labels, head):
        scores = np.r_[score_features(profile, test_in), score_features(profile, test_out)]
        assert roc_auc_score(truth, scores) > 0.9, type(profile).__name__


@pytest.mark.parametrize(
    ("features", "match"),
    [
        (np.zeros((1, 12)), "at least 2 rows"),
        (np.full((5, 12), np.nan), "NaN or infinite"),
        (np.zeros(12), "2-D"),
    ],
)
def test_fitted_scorers_reject_bad_reference(features: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_mahalanobis(features, np.zeros(len(features), dtype=int))
    with pytest.raises(ValueError, match=match):
        fit_gaussian(features)
    with pytest.raises(ValueError, match=match):
        fit_knn(features)
    with pytest.raises(ValueError, match=match):
        fit_vim(features, np.ones((3, 12)), np.ones(3))


def test_fitted_scorers_reject_bad_queries_and_labels() -> None:
    x, labels, _, _ = _classes(seed=16)
    for profile in _fit_all(x, labels, (_rng(16).normal(size=(4, 12)), np.full(4, 5.0))):
        with pytest.raises(ValueError, match="12 columns"):
            score_features(profile, x[:, :5])
        with pytest.raises(ValueError, match="NaN"):
            score_features(profile, np.full((2, 12), np.inf))
    with pytest.raises(ValueError, match="labels must be 1-D with 400"):
        fit_mahalanobis(x, labels[:10])
    with pytest.raises(ValueError, match="integer class ids"):
        fit_mahalanobis(x, labels.astype(float))
    with pytest.raises(ValueError, match="degenerate"):
        fit_gaussian(np.ones((10, 3)))
    with pytest.raises(ValueError, match="not a fitted OOD profile"):
        score_features(object(), x)


def test_profile_arrays_round_trip_and_versions() -> None:
    x, labels, _, _ = _classes(seed=17)
    for profile in _fit_all(x, labels, (_rng(18).normal(size=(4, 12)), np.full(4, 5.0))):
        arrays, meta = profile.to_arrays(), profile.meta()
        assert json.loads(json.dumps(meta)) == meta and meta["version"] == 1
        again = profile_from_arrays(arrays, meta)
        assert type(again) is type(profile)
        for key, value in again.to_arrays().items():
            assert np.array_equal(value, arrays[key]) and value.dtype == arrays[key].dtype
        np.testing.assert_array_equal(score_features(again, x), score_features(profile, x))
        with pytest.raises(ValueError, match="newer"):
            profile_from_arrays(arrays, {**meta, "version": 2})
        with pytest.raises(ValueError, match="missing array"):
            profile_from_arrays({}, meta)
    with pytest.raises(ValueError, match="unknown fitted profile kind"):
        profile_from_arrays({}, {"kind": "nope", "version": 1})
    assert set(PROFILE_KINDS) == {"mahalanobis", "gaussian", "knn", "vim", "patchcore"}


# ---------------------------------------------------------------- thresholds


@pytest.mark.parametrize("tpr", [0.95, 0.9, 0.5, 0.999, 1.0, 0.01])
@pytest.mark.parametrize("n", [1, 7, 100, 101, 1000])
def test_threshold_keeps_target_tpr_exactly(tpr: float, n: int) -> None:
    for scores in (_rng(n).normal(size=n), _rng(n).integers(0, 4, size=n).astype(float)):
        t = fit_threshold(scores, tpr)
        assert np.count_nonzero(scores <= t) / n >= tpr
        assert kept_fraction(scores, t) >= tpr
        smaller = scores[scores < t]
        if smaller.size:  # any lower threshold would break the guarantee
            assert np.count_nonzero(scores <= smaller.max()) / n < tpr
        assert t == np.quantile(scores, tpr, method="inverted_cdf")


def test_threshold_with_ties_and_bad_inputs() -> None:
    scores = np.array([1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0])
    assert fit_threshold(scores, 0.2) == 2.0
    assert fit_threshold(scores, 0.1) == 1.0
    assert fit_threshold(scores, 0.95) == 3.0
    with pytest.raises(ValueError, match="target_tpr"):
        fit_threshold(scores, 0.0)
    with pytest.raises(ValueError, match="target_tpr"):
        fit_threshold(scores, 1.5)
    with pytest.raises(ValueError, match="empty"):
        fit_threshold([], 0.9)
    with pytest.raises(ValueError, match="NaN"):
        fit_threshold([1.0, np.nan], 0.9)


def test_tail_fraction_matches_loop() -> None:
    holdout = np.r_[_rng(19).normal(size=200), np.full(20, 0.5)]
    queries = np.r_[_rng(20).normal(size=50), 0.5, holdout.min(), holdout.max(), -np.inf, np.inf]
    expected = [np.mean([h >= s for h in holdout]) for s in queries]
    np.testing.assert_array_equal(tail_fraction(holdout, queries), expected)
    assert tail_fraction(holdout, queries.reshape(1, -1)).shape == (1, len(queries))
    with pytest.raises(ValueError, match="NaN"):
        tail_fraction(holdout, [np.nan])
    with pytest.raises(ValueError, match="empty"):
        tail_fraction([], [1.0])


# ---------------------------------------------------------------- on-disk profiles


def _model_profile() -> ModelProfile:
    x, labels, _, _ = _classes(seed=21)
    holdout, _, _, _ = _classes(seed=22, n=120)
    head = (_rng(23).normal(size=(4, 12)), np.full(4, 5.0))
    entries: dict[str, ScorerEntry] = {}
    for fitted in _fit_all(x, labels, head):
        scores = score_features(fitted, holdout)
        entries[fitted.KIND] = ScorerEntry(fitted.KIND, fitted, fit_threshold(scores, 0.95), scores)
    logits = holdout @ head[0].T + head[1]
    energy = energy_score(logits, 2.0)
    entries["energy_t2"] = ScorerEntry(
        "energy", None, fit_threshold(energy), energy, {"temperature": 2.0}
    )
    probe = fingerprint({"logits": logits[:8], "features": holdout[:8]})
    return ModelProfile("resnet", "3", probe, 0.95, entries, created_at="2025-01-02T03:04:05+00:00")


def test_profile_round_trip_is_bit_exact(tmp_path: Path) -> None:
    original = _model_profile()
    save_profile(tmp_path / "resnet", original)
    loaded = load_profile(tmp_path / "resnet.json")
    assert (loaded.model_name, loaded.model_version, loaded.fingerprint) == (
        "resnet",
        "3",
        original.fingerprint,
    )
    assert (loaded.target_tpr, loaded.created_at) == (original.target_tpr, original.created_at)
    assert list(loaded.scorers) == list(original.scorers)
    for name, entry in original.scorers.items():
        got = loaded.scorers[name]
        assert (got.kind, got.threshold, got.params) == (entry.kind, entry.threshold, entry.params)
        assert np.array_equal(got.holdout_scores, entry.holdout_scores)
        if entry.profile is None:
            assert got.profile is None
            continue
        assert got.profile is not None and got.profile.meta() == entry.profile.meta()
        for key, value in entry.profile.to_arrays().items():
            stored = got.profile.to_arrays()[key]
            assert np.array_equal(stored, value) and stored.dtype == value.dtype
    save_profile(tmp_path / "again", loaded)
    first = json.loads((tmp_path / "resnet.json").read_text())
    assert first == json.loads((tmp_path / "again.json").read_text())
    assert first["schema"] == "assay.ood.profile/v1"
    assert first["scorers"]["knn"]["meta"]["k"] == 10
    assert first["scorers"]["energy_t2"]["holdout"]["kept_fraction"] >= 0.95
    assert isinstance(loaded.scorers["knn"].profile, KNNProfile)
    assert isinstance(loaded.scorers["vim"].profile, ViMProfile)
    assert isinstance(loaded.scorers["gaussian"].profile, GaussianProfile)
    assert isinstance(loaded.scorers["mahalanobis"].profile, MahalanobisProfile)


def test_profile_refuses_newer_schema_and_mismatched_arrays(tmp_path: Path) -> None:
    save_profile(tmp_path / "m", _model_profile())
    path = tmp_path / "m.json"
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "schema": "assay.ood.profile/v2"}))
    with pytest.raises(ValueError, match="newer than this code supports"):
        load_profile(tmp_path / "m")
    path.write_text(json.dumps({**document, "schema": "something/v1"}))
    with pytest.raises(ValueError, match="not an assay OOD profile"):
        load_profile(tmp_path / "m")
    path.write_text(json.dumps({**document, "arrays_sha256": "0" * 64}))
    with pytest.raises(ValueError, match="arrays_sha256"):
        load_profile(tmp_path / "m")
    # a fit time the API could not turn into a Timestamp is a bad profile at load
    for created_at, message in (
        ("yesterday", "is not ISO-8601"),
        ("2026-12-07T10:00:00", "has no UTC offset"),
        (1765101600, "created_at must be an ISO-8601 string"),
    ):
        path.write_text(json.dumps({**document, "created_at": created_at}))
        with pytest.raises(ValueError, match=message):
            load_profile(tmp_path / "m")


def test_profile_save_rejects_bad_entries(tmp_path: Path) -> None:
    good = _model_profile()
    energy = good.scorers["energy_t2"]
    cases = {
        "bad name": ScorerEntry("energy", None, 0.0, energy.holdout_scores),
        "ok": ScorerEntry("mahalanobis", None, 0.0, energy.holdout_scores),
    }
    with pytest.raises(ValueError, match="must match"):
        save_profile(
            tmp_path / "x", ModelProfile("m", "1", "f", 0.95, {"bad name": cases["bad name"]})
        )
    with pytest.raises(ValueError, match="needs a fitted profile"):
        save_profile(tmp_path / "x", ModelProfile("m", "1", "f", 0.95, {"ok": cases["ok"]}))
    nan_threshold = ScorerEntry("energy", None, float("nan"), energy.holdout_scores)
    with pytest.raises(ValueError, match="threshold must be finite"):
        save_profile(tmp_path / "x", ModelProfile("m", "1", "f", 0.95, {"e": nan_threshold}))
    wrong_kind = ScorerEntry("gaussian", good.scorers["knn"].profile, 0.0, energy.holdout_scores)
    with pytest.raises(ValueError, match="!= profile"):
        save_profile(tmp_path / "x", ModelProfile("m", "1", "f", 0.95, {"g": wrong_kind}))
    assert not list(tmp_path.iterdir())


def test_fingerprint_is_stable_and_sensitive() -> None:
    logits = _rng(24).normal(size=(8, 10)).astype(np.float32)
    base = fingerprint({"logits": logits, "features": logits[:, :4]})
    assert base.startswith("sha256:") and len(base) == 7 + 64
    assert fingerprint({"features": logits[:, :4], "logits": logits.astype(np.float64)}) == base
    assert (
        fingerprint({"logits": logits.astype(np.float64) + 1e-9, "features": logits[:, :4]}) == base
    )
    assert fingerprint({"logits": logits + 1e-2, "features": logits[:, :4]}) != base
    assert fingerprint({"logits": logits.reshape(10, 8), "features": logits[:, :4]}) != base
    with pytest.raises(ValueError, match="at least one"):
        fingerprint({})
    with pytest.raises(ValueError, match="NaN"):
        fingerprint({"x": np.array([np.nan])})
