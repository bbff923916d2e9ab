"""The Square Attack's initialisations and square proposals (one image at a time).

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV 2020. Images are H x W x C
float arrays in [0, 1]; `x` is the original image, `adv` the current best one.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]

P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
"""Iterations (out of the paper's 10 000) after which p is halved."""


def p_schedule(p_init: float, iteration: int, max_queries: int) -> float:
    """The paper's piecewise-constant schedule of p, rescaled to the query budget.

    p_i = p_init / 2^k, where k counts the thresholds of `P_HALVINGS` that
    ``i * 10000 / max_queries`` has passed.
    """
    scaled = int(iteration / max_queries * 10_000)
    return float(p_init / 2 ** sum(scaled > threshold for threshold in P_HALVINGS))


def square_side(p: float, height: int, width: int, minimum: int = 1) -> int:
    """Side h of a square holding about a fraction p of the H x W pixels: round(sqrt(p·H·W))."""
    side = round(math.sqrt(p * height * width))
    return int(min(max(side, minimum), height, width))


def init_linf(x: Array, epsilon: float, rng: np.random.Generator) -> Array:
    """L∞ initialisation: vertical stripes, x̂ = clip(x + ε·s), s ∈ {-1, 1} per column and channel.

    Args:
        x: Original images, N x H x W x C in [0, 1].
        epsilon: The L∞ radius ε.
        rng: Source of the stripe signs.
    """
    n, _, width, channels = x.shape
    stripes = rng.choice(np.array([-1.0, 1.0]), size=(n, 1, width, channels))
    return np.clip(x + epsilon * stripes, 0.0, 1.0).astype(np.float32)


def eta(rows: int, cols: int) -> npt.NDArray[np.float64]:
    """The paper's centred pattern η^(h1,h2) (eq. 2), largest in the middle.

    η_{r,s} = Σ_{k=0}^{M(r,s)} 1 / (n + 1 - k)², with n = ⌊h1/2⌋ and
    M(r,s) = n - max(|r - ⌊h1/2⌋ - 1|, |s - ⌊h2/2⌋ - 1|) (1-based r, s; empty sums are 0).
    """
    n = rows // 2
    r = np.arange(1, rows + 1)[:, None]
    s = np.arange(1, cols + 1)[None, :]
    m = n - np.maximum(np.abs(r - n - 1), np.abs(s - cols // 2 - 1))
    partial = np.cumsum(1.0 / (n + 1 - np.arange(n + 1)) ** 2)
    pattern: npt.NDArray[np.float64] = np.where(m >= 0, partial[np.clip(m, 0, n)], 0.0)
    return pattern


def init_l2(x: Array, epsilon: float, rng: np.random.Generator) -> Array:
    """L2 initialisation: a centred grid of s x s tiles (s = ⌊min(H, W)/5⌋), each ±η^(s,s).

    Each tile and channel gets an independent random sign; the perturbation is
    rescaled to ||δ||₂ = ε, then x̂ = clip(x + δ, 0, 1) (clipping only shrinks it).
    """
    n, height, width, channels = x.shape
    side = max(min(height, width) // 5, 1)
    rows, cols = height // side, width // side
    top, left = (height - rows * side) // 2, (width - cols * side) // 2
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n, rows, cols, channels))
    # kron of (N, rows, cols, C) with (1, s, s, 1) lays one signed tile out per grid cell.
    tiles = np.kron(signs, eta(side, side)[None, :, :, None])
    delta = np.zeros((n, height, width, channels))
    delta[:, top : top + rows * side, left : left + cols * side] = tiles
    norms = np.sqrt((delta**2).sum(axis=(1, 2, 3), keepdims=True))
    start: Array = np.clip(x + delta * (epsilon / norms), 0.0, 1.0).astype(np.float32)
    return start


def propose_linf(
    x: Array, adv: Array, side: int, epsilon: float, rng: np.random.Generator
) -> Array:
    """L∞ proposal: one random h x h square of δ = x̂ - x is set to ±ε (one sign per channel).

    x_new = clip(x + δ_new, 0, 1): δ_new stays in the ε-ball by construction.
    """
    height, width, channels = x.shape
    r = int(rng.integers(0, height - side + 1))
    s = int(rng.integers(0, width - side + 1))
    window = np.s_[r : r + side, s : s + side]
    new = adv.copy()
    signs = rng.choice(np.array([-epsilon, epsilon]), size=channels)
    new[window] = np.clip(x[window] + signs, 0.0, 1.0)
    return new


def _update_pattern(side: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """η* = η̃/||η̃||₂ with η̃ = (η^(h,k), -η^(h,h-k)), k = ⌊h/2⌋, transposed with probability 1/2."""
    k = side // 2
    pattern = np.concatenate([eta(side, k), -eta(side, side - k)], axis=1)
    if rng.random() < 0.5:
        pattern = pattern.T
    unit: npt.NDArray[np.float64] = pattern / np.sqrt((pattern**2).sum())
    return unit


def propose_l2(x: Array, adv: Array, side: int, epsilon: float, rng: np.random.Generator) -> Array:
    """L2 proposal (the paper's Algorithm 3): move perturbation mass into a new square.

    With nu = x̂ - x, two random h x h windows W1 and W2, and the unused budget
    ε²_u = ε² - ||nu||², for each channel i (sign s uniform in {-1, 1}):

        tmp = s·η* + nu[W1, i] / ||nu[W1, i]||
        ε_i = sqrt(||nu[W1 or W2, i]||² + ε²_u / C)
        nu[W2, i] ← 0;  nu[W1, i] ← ε_i · tmp / ||tmp||

    The new nu has ||nu||₂ = ε (mass from W1 and W2 plus the unused budget). The
    result is clip(x + nu, 0, 1), rescaled into the ball if rounding pushed it out.
    """
    height, width, channels = x.shape
    nu = adv.astype(np.float64) - x
    corners = rng.integers(0, [height - side + 1, width - side + 1], size=(2, 2))
    (r1, s1), (r2, s2) = corners.tolist()
    w1 = np.s_[r1 : r1 + side, s1 : s1 + side]
    w2 = np.s_[r2 : r2 + side, s2 : s2 + side]
    union = np.zeros((height, width), dtype=bool)
    union[w1] = union[w2] = True
    unused = max(epsilon**2 - float((nu**2).sum()), 0.0)
    pattern = _update_pattern(side, rng)
    tiny = 1e-12
    for i in range(channels):
        sign = rng.choice(np.array([-1.0, 1.0]))
        old = nu[(*w1, i)]
        temp = sign * pattern + old / (np.sqrt((old**2).sum()) + tiny)
        available = math.sqrt(float((nu[:, :, i][union] ** 2).sum()) + unused / channels)
        nu[(*w2, i)] = 0.0
        nu[(*w1, i)] = temp * (available / (np.sqrt((temp**2).sum()) + tiny))
    delta = np.clip(x + nu, 0.0, 1.0) - x
    norm = math.sqrt(float((delta**2).sum()))
    if norm > epsilon:
        delta *= epsilon / norm
    return (x + delta).astype(np.float32)
