"""OOD scoring benchmark: assay's scorers vs straightforward numpy references.

In one run, on synthetic penultimate-layer features (seeded: a `--bank` x 1280
float32 reference bank drawn from 10 Gaussian class clusters with a decaying
noise spectrum, and `--queries` query features, half from those clusters and
half from 5 unseen ones) and the float32 logits of a random linear head
1280 -> 1000:

* per scorer (msp, max_logit, energy, entropy, mahalanobis, gaussian, knn with
  k=50, vim) the median over `--repeats` (ours and the reference alternated) of
  (a) fitting on the bank (fitted scorers only) and (b) scoring the queries,
  with `assay.server.ood` and with a reference written below the way a notebook
  would (plain numpy: softmax and log-sum-exp with the max trick, per-class
  loops over ``np.linalg.inv`` of an ``np.cov`` covariance, a full queries x
  bank distance matrix with ``np.sort``, ``np.linalg.eig`` of ViM's second
  moment). Both must give the
  same scores (asserted; the references use the same Ledoit-Wolf shrinkage as
  assay, written out in the textbook form, so that the estimators agree);
* pytorch-ood's equivalent detectors, timed only, when it is installed (it is
  not a dependency of assay or of the bench environment);
* the peak traced memory (`tracemalloc`, which sees numpy's buffers) of
  assay's chunked KNN scoring of the queries against a `--memory-bank` x 1280
  bank, vs the naive full distance matrix (measured when that matrix is at most
  1 GiB, else its theoretical size),

then the suite-total scoring ratio last (reference time / ours, summed over the
eight scorers: > 1 means we are faster).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.server.ood import (
    energy_score,
    entropy_score,
    fit_gaussian,
    fit_knn,
    fit_mahalanobis,
    fit_vim,
    gaussian_score,
    knn_score,
    mahalanobis_score,
    max_logit_score,
    msp_score,
    vim_score,
)
from assay.server.ood.vim import default_principal_dim

DIM = 1280
HEAD_CLASSES = 1000
CLUSTERS = 10
UNSEEN_CLUSTERS = 5
K = 50
NAIVE_LIMIT_BYTES = 1 << 30
MIB = 1 << 20


@dataclass
class Synthetic:
    """Seeded features, labels and logits (all float32 as a model would give them)."""

    bank: np.ndarray  # M x D
    labels: np.ndarray  # M cluster ids
    bank_logits: np.ndarray  # M x HEAD_CLASSES
    queries: np.ndarray  # N x D
    query_logits: np.ndarray  # N x HEAD_CLASSES
    weight: np.ndarray  # HEAD_CLASSES x D
    bias: np.ndarray  # HEAD_CLASSES
    draw: Callable[[int], np.ndarray]  # more in-distribution features (memory bank)


def synthetic(bank: int, queries: int, seed: int) -> Synthetic:
    """Class clusters around a shared positive offset, noise with a decaying spectrum."""
    rng = np.random.default_rng(seed)
    offset = np.abs(rng.standard_normal(DIM)) * 0.5
    centres = (offset + 0.6 * rng.standard_normal((CLUSTERS + UNSEEN_CLUSTERS, DIM))).astype(
        np.float32
    )
    scales = ((1.0 + np.arange(DIM) / 64.0) ** -0.5).astype(np.float32)
    rotation = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0].astype(np.float32)

    def draw_from(ids: np.ndarray) -> np.ndarray:
        noise = rng.standard_normal((ids.shape[0], DIM), dtype=np.float32) * scales
        return centres[ids] + noise @ rotation

    weight = (3.0 * rng.standard_normal((HEAD_CLASSES, DIM)) / np.sqrt(DIM)).astype(np.float32)
    bias = (0.1 * rng.standard_normal(HEAD_CLASSES)).astype(np.float32)
    labels = rng.integers(0, CLUSTERS, bank)
    x = draw_from(labels)
    query_ids = np.concatenate(
        [
            rng.integers(0, CLUSTERS, queries - queries // 2),
            rng.integers(CLUSTERS, CLUSTERS + UNSEEN_CLUSTERS, queries // 2),
        ]
    )
    q = draw_from(query_ids)
    return Synthetic(
        bank=x,
        labels=labels,
        bank_logits=x @ weight.T + bias,
        queries=q,
        query_logits=q @ weight.T + bias,
        weight=weight,
        bias=bias,
        draw=lambda n: draw_from(rng.integers(0, CLUSTERS, n)),
    )


# --- references, written the way a notebook would -------------------------------------------


def ref_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ref_logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return m[:, 0] + np.log(np.exp(z - m).sum(axis=1))


def ref_msp(z: np.ndarray) -> np.ndarray:
    return -ref_softmax(z).max(axis=1)


def ref_max_logit(z: np.ndarray) -> np.ndarray:
    return -z.max(axis=1)


def ref_energy(z: np.ndarray) -> np.ndarray:
    return -ref_logsumexp(z)


def ref_entropy(z: np.ndarray) -> np.ndarray:
    p = ref_softmax(z)
    return -(p * np.log(p)).sum(axis=1)


def ref_shrunk_cov(xc: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf (2004) covariance of rows already centred, textbook form."""
    n, p = xc.shape
    s = np.cov(xc, rowvar=False, bias=True)
    mu = np.trace(s) / p
    d2 = ((s - mu * np.eye(p)) ** 2).sum() / p
    b2 = ((np.sum(xc.astype(np.float64) ** 2, axis=1) ** 2).sum() / n - (s**2).sum()) / (n * p)
    delta = min(b2, d2) / d2
    return (1 - delta) * s + delta * mu * np.eye(p)


def ref_fit_mahalanobis(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(axis=0, dtype=np.float64) for c in classes])
    centred = np.concatenate([x[y == c] - means[i] for i, c in enumerate(classes)])
    return means, np.linalg.inv(ref_shrunk_cov(centred))


def ref_mahalanobis(model: tuple[np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    means, precision = model
    distances = []
    for mu in means:
        diff = x - mu
        distances.append(((diff @ precision) * diff).sum(axis=1))
    return np.stack(distances, axis=1).min(axis=1)


def ref_fit_gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0, dtype=np.float64)
    return mean[None, :], np.linalg.inv(ref_shrunk_cov(x - mean))


def ref_fit_knn(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ref_knn(bank: np.ndarray, x: np.ndarray, k: int = K) -> np.ndarray:
    q = x / np.linalg.norm(x, axis=1, keepdims=True)
    d2 = (q**2).sum(axis=1)[:, None] + (bank**2).sum(axis=1)[None, :] - 2 * q @ bank.T
    distances = np.sqrt(np.maximum(d2, 0))
    return np.sort(distances, axis=1)[:, k - 1]


def ref_fit_vim(
    x: np.ndarray, logits: np.ndarray, w: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    u = -np.linalg.pinv(w.astype(np.float64)) @ b
    xc = x - u
    eigenvalues, eigenvectors = np.linalg.eig(xc.T @ xc / len(xc))
    order = np.argsort(-eigenvalues.real)
    residual_space = eigenvectors[:, order[default_principal_dim(x.shape[1]) :]].real
    alpha = logits.max(axis=1).mean() / np.linalg.norm(xc @ residual_space, axis=1).mean()
    return u, residual_space, float(alpha)


def ref_vim(model: tuple[np.ndarray, np.ndarray, float], x: np.ndarray, z: np.ndarray):
    u, residual_space, alpha = model
    return alpha * np.linalg.norm((x - u) @ residual_space, axis=1) - ref_logsumexp(z)


# --- timing ---------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], repeats: int, warmup: bool) -> tuple[float, Any]:
    """Median seconds over repeats (after one untimed call if warmup) and the last result."""
    result = fn() if warmup else None
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples)), result


def timed_pair(
    ours: Callable[[], Any], ref: Callable[[], Any], repeats: int, warmup: bool
) -> tuple[float, float, Any, Any]:
    """`timed` for both, alternating ours and the reference so that both see the same load."""
    results = [ours(), ref()] if warmup else [None, None]
    samples: list[list[float]] = [[], []]
    for _ in range(repeats):
        for i, fn in enumerate((ours, ref)):
            start = time.perf_counter()
            results[i] = fn()
            samples[i].append(time.perf_counter() - start)
    return float(np.median(samples[0])), float(np.median(samples[1])), results[0], results[1]


@dataclass
class Case:
    """One scorer: fit (None when stateless) and score, ours and the reference's."""

    name: str
    ours_fit: Callable[[], Any] | None
    ours_score: Callable[[Any], np.ndarray]
    ref_fit: Callable[[], Any] | None
    ref_score: Callable[[Any], np.ndarray]
    rtol: float  # float32 paths 1e-4, float64 paths 1e-6; atol = rtol * max |score|


def cases(d: Synthetic) -> list[Case]:
    x, q, zq = d.bank, d.queries, d.query_logits
    float32_paths, float64_paths = 1e-4, 1e-6
    logit = [
        ("msp", msp_score, ref_msp),
        ("max_logit", max_logit_score, ref_max_logit),
        ("energy", energy_score, ref_energy),
        ("entropy", entropy_score, ref_entropy),
    ]
    return [
        *(
            Case(name, None, lambda _, f=ours: f(zq), None, lambda _, f=ref: f(zq), float32_paths)
            for name, ours, ref in logit
        ),
        Case(
            "mahalanobis",
            lambda: fit_mahalanobis(x, d.labels),
            lambda p: mahalanobis_score(p, q),
            lambda: ref_fit_mahalanobis(x, d.labels),
            lambda m: ref_mahalanobis(m, q),
            float64_paths,
        ),
        Case(
            "gaussian",
            lambda: fit_gaussian(x),
            lambda p: gaussian_score(p, q),
            lambda: ref_fit_gaussian(x),
            lambda m: ref_mahalanobis(m, q),
            float64_paths,
        ),
        Case(
            "knn",
            lambda: fit_knn(x, k=K),
            lambda p: knn_score(p, q),
            lambda: ref_fit_knn(x),
            lambda m: ref_knn(m, q),
            float32_paths,
        ),
        Case(
            "vim",
            lambda: fit_vim(x, d.weight, d.bias),
            lambda p: vim_score(p, q, zq),
            lambda: ref_fit_vim(x, d.bank_logits, d.weight, d.bias),
            lambda m: ref_vim(m, q, zq),
            float64_paths,
        ),
    ]


@dataclass
class Row:
    name: str
    fit_ours: float  # seconds; nan when stateless
    fit_ref: float
    score_ours: float
    score_ref: float
    deviation: float  # max |ours - ref| / max |ref|


def run_case(case: Case, repeats: int) -> Row:
    fit_ours = fit_ref = float("nan")
    profile = model = None
    if case.ours_fit and case.ref_fit:
        fit_ours, fit_ref, profile, model = timed_pair(case.ours_fit, case.ref_fit, repeats, False)
    score_ours, score_ref, ours, ref = timed_pair(
        lambda: case.ours_score(profile), lambda: case.ref_score(model), repeats, True
    )
    scale = float(np.abs(ref).max())
    deviation = float(np.abs(ours - ref).max()) / scale
    assert np.allclose(ours, ref, rtol=case.rtol, atol=case.rtol * scale), (
        f"{case.name}: assay and the reference disagree (max relative deviation {deviation:.2e})"
    )
    return Row(case.name, fit_ours, fit_ref, score_ours, score_ref, deviation)


def ms(seconds: float, width: int) -> str:
    return f"{'-':>{width}}" if np.isnan(seconds) else f"{seconds * 1000:{width}.2f}"


def ratio(num: float, den: float, width: int) -> str:
    return f"{'-':>{width}}" if np.isnan(num) else f"{num / den:{width - 1}.2f}x"


def print_rows(rows: list[Row]) -> None:
    print(
        f"{'scorer':<12} {'fit ours ms':>11} {'fit ref ms':>11} {'fit x':>7}  "
        f"{'score ours ms':>13} {'score ref ms':>12} {'speed-up':>9}  {'max rel dev':>11}"
    )
    for r in rows:
        print(
            f"{r.name:<12} {ms(r.fit_ours, 11)} {ms(r.fit_ref, 11)} "
            f"{ratio(r.fit_ref, r.fit_ours, 7)}  {ms(r.score_ours, 13)} {ms(r.score_ref, 12)} "
            f"{ratio(r.score_ref, r.score_ours, 9)}  {r.deviation:11.1e}"
        )
    slower = [r.name for r in rows if r.score_ours > r.score_ref]
    print(f"slower than the reference (scoring): {', '.join(slower) or 'none'}")
    fitted = [r for r in rows if not np.isnan(r.fit_ours)]
    fit_ours = sum(r.fit_ours for r in fitted) * 1000
    fit_ref = sum(r.fit_ref for r in fitted) * 1000
    print(
        f"fitting total: ours {fit_ours:.1f} ms, reference {fit_ref:.1f} ms "
        f"({fit_ref / fit_ours:.2f}x)"
    )


# --- pytorch-ood (optional, timing only) ----------------------------------------------------


def pytorch_ood_cases(d: Synthetic, torch: Any, detector: Any) -> list[tuple[str, Any, Any]]:
    """(name, fit or None, score(fitted)) with pytorch-ood's detectors on the same data."""
    x, q = torch.from_numpy(d.bank), torch.from_numpy(d.queries)
    zq, y = torch.from_numpy(d.query_logits), torch.from_numpy(d.labels)
    normalise = torch.nn.functional.normalize

    def fit_mahalanobis_like(labels: Any) -> Any:
        return detector.Mahalanobis(None).fit_features(x, labels)

    def fit_vim_detector() -> Any:
        vim = detector.ViM(
            lambda t: t, default_principal_dim(DIM), torch.from_numpy(d.weight),
            torch.from_numpy(d.bias),
        )  # fmt: skip
        return vim.fit([(x, y)])

    return [
        ("msp", None, lambda _: detector.MaxSoftmax.score(zq)),
        ("max_logit", None, lambda _: detector.MaxLogit.score(zq)),
        ("energy", None, lambda _: detector.EnergyBased.score(zq)),
        ("entropy", None, lambda _: detector.Entropy.score(zq)),
        ("mahalanobis", lambda: fit_mahalanobis_like(y), lambda m: m.predict_features(q)),
        (
            "gaussian",
            lambda: fit_mahalanobis_like(torch.zeros_like(y)),
            lambda m: m.predict_features(q),
        ),
        (
            "knn",
            lambda: detector.KNN(None, k=K).fit_features(normalise(x, dim=1), y),
            lambda m: m.predict_features(normalise(q, dim=1)),
        ),
        ("vim", fit_vim_detector, lambda m: m.predict(q)),
    ]


def pytorch_ood(d: Synthetic, rows: list[Row], repeats: int) -> None:
    try:
        import torch
        from pytorch_ood import detector
    except ImportError:
        print("pytorch-ood not installed; skipped")
        return
    version = getattr(__import__("pytorch_ood"), "__version__", "?")
    print(f"pytorch-ood {version} (timing only: its estimators differ, e.g. no shrinkage)")
    print(f"{'scorer':<12} {'fit ms':>10} {'score ms':>10} {'pyood/ours':>10}")
    ours = {r.name: r.score_ours for r in rows}
    for name, fit, score in pytorch_ood_cases(d, torch, detector):
        try:
            fit_s, fitted = timed(fit, repeats, False) if fit else (float("nan"), None)
            score_s, _ = timed(lambda s=score, f=fitted: s(f), repeats, True)
        except Exception as exc:  # an optional third-party API that changes between releases
            print(f"{name:<12} failed: {type(exc).__name__}: {exc}")
            continue
        print(f"{name:<12} {ms(fit_s, 10)} {ms(score_s, 10)} {ratio(score_s, ours[name], 10)}")


# --- KNN memory -----------------------------------------------------------------------------


def traced_peak(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(peak traced bytes above the start, seconds, result) of one call."""
    tracemalloc.start()
    try:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, seconds, result


def knn_memory(d: Synthetic, size: int) -> None:
    chunk = 10_000
    raw = np.concatenate([d.draw(min(chunk, size - s)) for s in range(0, size, chunk)])
    profile = fit_knn(raw, k=K)
    del raw
    n = d.queries.shape[0]
    bank_mib = profile.bank.nbytes / MIB
    print(f"KNN memory: {n} queries vs a {size} x {DIM} float32 bank ({bank_mib:.0f} MiB, k={K})")
    ours_peak, ours_s, ours = traced_peak(lambda: knn_score(profile, d.queries))
    print(f"  assay chunked knn_score   peak {ours_peak / MIB:8.1f} MiB  {ours_s * 1000:8.1f} ms")
    matrix = n * size * np.dtype(np.float32).itemsize
    if matrix > NAIVE_LIMIT_BYTES:
        print(
            f"  naive full matrix         {n} x {size} float32 distances alone = "
            f"{matrix / MIB:.1f} MiB (theoretical: over 1 GiB, not allocated)"
        )
        return
    # The bank is already normalised, so the reference's fit (a row normalisation) is skipped.
    naive_peak, naive_s, ref = traced_peak(lambda: ref_knn(profile.bank, d.queries))
    assert np.allclose(ours, ref, rtol=1e-4, atol=1e-4), "knn: chunked and naive disagree"
    print(
        f"  naive full matrix + sort  peak {naive_peak / MIB:8.1f} MiB  {naive_s * 1000:8.1f} ms"
        f"  (the {n} x {size} float32 distance matrix alone is {matrix / MIB:.1f} MiB)"
    )
    print(f"  peak memory naive/assay: {naive_peak / ours_peak:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bank", type=int, default=10_000, help="reference features")
    parser.add_argument("--queries", type=int, default=1_000, help="query features")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-bank", type=int, default=100_000, help="KNN memory bank")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args()
    if args.quick:
        args.bank, args.queries, args.repeats, args.memory_bank = 2_000, 200, 1, 20_000

    d = synthetic(args.bank, args.queries, args.seed)
    print(
        f"bank {args.bank} x {DIM} float32 ({CLUSTERS} clusters), {args.queries} queries "
        f"(half unseen clusters), head {DIM} -> {HEAD_CLASSES}; median of {args.repeats}"
    )
    rows = [run_case(case, args.repeats) for case in cases(d)]
    print_rows(rows)
    pytorch_ood(d, rows, args.repeats)
    knn_memory(d, args.memory_bank)
    ours_total = sum(r.score_ours for r in rows)
    reference_total = sum(r.score_ref for r in rows)
    print(
        f"suite total scoring: ours {ours_total * 1000:.1f} ms, reference "
        f"{reference_total * 1000:.1f} ms per {args.queries} queries"
    )
    print(f"ood scoring speed-up (reference/ours): {reference_total / ours_total:.2f}")


if __name__ == "__main__":
    main()
