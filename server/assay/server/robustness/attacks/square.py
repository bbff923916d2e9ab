"""Square Attack: score-based (query-only) untargeted L∞ and L2 attacks.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV 2020.

Random search on the margin loss L(x) = f_y(x) - max_{k≠y} f_k(x): each iteration
proposes x_new = Π(x̂ + δ), where δ changes only an h x h square (h shrinks with
the p-schedule) and Π projects onto [0, 1] ∩ {||x_new - x|| ≤ ε}; x_new replaces
x̂ when its margin is lower. An image is broken when its margin is < 0.

The attack only awaits a scoring function (a batch of [0, 1] images in, logits
out), so it runs through any backend, Triton included. Every iteration scores
all still-unbroken images in a single call, so a batching backend sees full
batches; broken images stop querying.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from assay.server.errors import BackendError, InvalidArgumentError
from assay.server.robustness.attacks._inputs import Norm, validate_batch
from assay.server.robustness.attacks._square_sampling import (
    init_l2,
    init_linf,
    p_schedule,
    propose_l2,
    propose_linf,
    square_side,
)

Score = Callable[[np.ndarray], Awaitable[np.ndarray]]
"""Async scorer: float32 M x H x W x C images in [0, 1] -> M x K logits."""

DEFAULT_P_INIT: dict[str, float] = {"linf": 0.05, "l2": 0.1}
"""The paper's initial fraction of pixels changed per square."""
_MIN_SIDE: dict[str, int] = {"linf": 1, "l2": 3}
"""Smallest square side; the L2 update splits its square in two halves."""


@dataclass(frozen=True, eq=False)
class SquareResult:
    """Outcome of a Square Attack over a batch of images.

    Attributes:
        adversarial: N x H x W x C float32 images, the best found per image (the
            original for images misclassified from the start).
        success: True where the final image is misclassified (margin < 0),
            including images misclassified from the start.
        queries: Perturbed-image queries per image; the initialisation counts as
            one; 0 for images misclassified from the start.
        score_calls: Calls to the scoring function (backend calls), the clean
            scoring included.
        clean_correct: True where the clean image is classified correctly.
    """

    adversarial: npt.NDArray[np.float32]
    success: npt.NDArray[np.bool_]
    queries: npt.NDArray[np.int64]
    score_calls: int
    clean_correct: npt.NDArray[np.bool_]

    @property
    def initially_wrong(self) -> npt.NDArray[np.bool_]:
        """Images misclassified before any perturbation (success with 0 queries)."""
        return ~self.clean_correct

    @property
    def clean_accuracy(self) -> float:
        """Fraction of clean images classified correctly."""
        return float(self.clean_correct.mean())

    @property
    def robust_accuracy(self) -> float:
        """Fraction of images still classified correctly after the attack."""
        return float((~self.success).mean())

    @property
    def success_rate(self) -> float:
        """Fraction of initially-correct images the attack broke (nan if none)."""
        if not self.clean_correct.any():
            return math.nan
        return float(self.success[self.clean_correct].mean())

    @property
    def _broken_queries(self) -> npt.NDArray[np.int64]:
        return self.queries[self.success & self.clean_correct]

    @property
    def median_queries(self) -> float:
        """Median queries over broken, initially-correct images (nan if none)."""
        spent = self._broken_queries
        return float(np.median(spent)) if spent.size else math.nan

    @property
    def mean_queries(self) -> float:
        """Mean queries over broken, initially-correct images (nan if none)."""
        spent = self._broken_queries
        return float(spent.mean()) if spent.size else math.nan


def _validate(
    images: np.ndarray, labels: np.ndarray, norm: str, epsilon: float, max_queries: int, p: float
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    x, y = validate_batch(images, labels, norm, epsilon)
    if isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < 1:
        raise InvalidArgumentError(f"max_queries must be an integer >= 1, got {max_queries!r}")
    if not 0.0 < p <= 1.0:
        raise InvalidArgumentError(f"p_init must be in (0, 1], got {p}")
    return x, y


async def _margins(
    score: Score, batch: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """Score a batch and return the margins f_y - max_{k≠y} f_k."""
    logits = np.asarray(await score(batch), dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] != batch.shape[0] or logits.shape[1] < 2:
        raise BackendError(
            f"score returned shape {logits.shape} for {batch.shape[0]} images; "
            "expected M x K logits with K >= 2"
        )
    if not np.isfinite(logits).all():
        raise BackendError("score returned non-finite logits")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise InvalidArgumentError(f"labels must be in [0, {logits.shape[1]}), got {labels}")
    rows = np.arange(labels.size)
    true = logits[rows, labels]
    others = logits.copy()
    others[rows, labels] = -np.inf
    margins: npt.NDArray[np.float64] = true - others.max(axis=1)
    return margins


async def square_attack(
    score: Score,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    norm: Norm,
    epsilon: float,
    max_queries: int,
    rng: np.random.Generator,
    p_init: float | None = None,
) -> SquareResult:
    """Run the untargeted Square Attack on a batch of images.

    Images are first scored clean (one call, not counted as a query); images
    with margin < 0 count as broken with 0 queries. The rest get the paper's
    initialisation (L∞: vertical ±ε stripes; L2: a grid of ±η tiles with
    ||δ||₂ = ε), which is their first query, then up to ``max_queries - 1``
    square updates, each scoring every still-unbroken image in one call.
    Square side at update i: h = round(sqrt(p_i·H·W)), p_i from
    `p_schedule` (p_init halved after 10, 50, 200, 500, 1000, 2000, 4000, 6000
    and 8000 of 10 000 iterations, rescaled to ``max_queries``).

    Args:
        score: Async scorer, float32 M x H x W x C in [0, 1] -> M x K logits.
        images: Float N x H x W x C images in [0, 1].
        labels: N true class indices.
        norm: "linf" or "l2" threat model.
        epsilon: Radius of the ε-ball around each image.
        max_queries: Query budget per image (the initialisation counts as 1).
        rng: Source of all randomness; the same seed gives the same result.
        p_init: Initial fraction of pixels per square (default 0.05 for L∞,
            0.1 for L2, as in the paper).

    Returns:
        The adversarial images, success flags, per-image queries and call count.

    Raises:
        InvalidArgumentError: Bad shapes, ε ≤ 0, max_queries < 1, pixels
            outside [0, 1] or labels outside the scorer's classes.
        BackendError: The scorer returned something other than M x K finite logits.
    """
    p_start = DEFAULT_P_INIT.get(norm, 0.0) if p_init is None else p_init
    x, y = _validate(images, labels, norm, epsilon, max_queries, p_start)
    initialise, propose = (init_linf, propose_linf) if norm == "linf" else (init_l2, propose_l2)
    height, width = x.shape[1:3]

    margin = await _margins(score, x, y)
    calls = 1
    clean_correct = margin >= 0
    adv = x.copy()
    queries = np.zeros(len(x), dtype=np.int64)

    active = np.flatnonzero(clean_correct)
    if active.size:
        start = initialise(x[active], epsilon, rng)
        margin[active] = await _margins(score, start, y[active])
        calls += 1
        adv[active] = start
        queries[active] = 1

    for step in range(max_queries - 1):
        active = np.flatnonzero(margin >= 0)
        if not active.size:
            break
        side = square_side(p_schedule(p_start, step, max_queries), height, width, _MIN_SIDE[norm])
        candidates = np.stack([propose(x[i], adv[i], side, epsilon, rng) for i in active])
        new_margin = await _margins(score, candidates, y[active])
        calls += 1
        queries[active] += 1
        better = new_margin < margin[active]
        adv[active[better]] = candidates[better]
        margin[active[better]] = new_margin[better]

    return SquareResult(
        adversarial=adv,
        success=margin < 0,
        queries=queries,
        score_calls=calls,
        clean_correct=clean_correct,
    )
