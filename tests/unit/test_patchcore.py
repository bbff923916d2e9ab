"""PatchCore: coreset, exact nearest-neighbour scores, anomaly maps and persistence."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from assay.server.ood.evaluation import pixel_auroc
from assay.server.ood.patchcore import PatchMemory, anomaly_map, fit_patch_memory, score_patches


def brute_force_patches(maps: np.ndarray, p: int) -> np.ndarray:
    """(N·H·W) x C means over the in-map part of each p x p window, by explicit loops."""
    n, c, h, w = maps.shape
    r = p // 2
    out = np.empty((n, h, w, c))
    for i in range(h):
        for j in range(w):
            window = maps[:, :, max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1]
            out[:, i, j] = window.astype(np.float64).mean(axis=(2, 3))
    return out.reshape(-1, c)


def covering_radius(points: np.ndarray, subset: np.ndarray) -> float:
    return float(cdist(points, subset).min(axis=1).max())


def test_coreset_size_and_determinism() -> None:
    maps = np.random.default_rng(0).normal(size=(3, 8, 5, 7)).astype(np.float32)  # 105 patches
    for fraction in (0.1, 0.25, 0.5, 1.0, 1e-4):
        memory = fit_patch_memory(maps, coreset_fraction=fraction)
        assert memory.size == max(1, math.ceil(fraction * 105)), fraction
        assert memory.patches == 105 and memory.channels == 8
    first = fit_patch_memory(maps, seed=3)
    assert np.array_equal(first.bank, fit_patch_memory(maps, seed=3).bank)
    assert not np.array_equal(first.bank, fit_patch_memory(maps, seed=4).bank)


def test_full_memory_is_the_aggregated_patches() -> None:
    maps = np.random.default_rng(1).normal(size=(2, 4, 6, 5)).astype(np.float32)
    for p in (1, 3, 5):
        memory = fit_patch_memory(maps, coreset_fraction=1.0, neighbourhood=p)
        np.testing.assert_allclose(memory.bank, brute_force_patches(maps, p), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels", [16, 200])  # 200 > 128 exercises the random projection
def test_greedy_coreset_covers_clustered_data_better_than_random(channels: int) -> None:
    rng = np.random.default_rng(2)
    sizes = [440, 30, 15, 10, 5]  # 500 patches in 5 clusters of very different sizes
    centres = rng.normal(0.0, 10.0, (5, channels))
    points = np.concatenate(
        [c + rng.normal(0, 0.5, (k, channels)) for c, k in zip(centres, sizes, strict=True)]
    )
    points = rng.permutation(points).astype(np.float32)
    maps = points.reshape(5, 10, 10, channels).transpose(0, 3, 1, 2)
    memory = fit_patch_memory(maps, coreset_fraction=0.02, neighbourhood=1)  # 10 points
    greedy = covering_radius(points, memory.bank)
    randoms = [covering_radius(points, rng.choice(points, 10, replace=False)) for _ in range(20)]
    assert greedy < min(randoms)
    assert greedy < np.linalg.norm(centres[0] - centres[1]) / 4  # every cluster is covered


def test_scores_are_exact_nearest_neighbour_distances_with_chunking() -> None:
    rng = np.random.default_rng(3)
    memory = fit_patch_memory(
        rng.normal(size=(4, 6, 5, 6)).astype(np.float32), coreset_fraction=0.3
    )
    test = rng.normal(size=(3, 6, 5, 6)).astype(np.float32)
    expected = cdist(brute_force_patches(test, 3), memory.bank.astype(np.float64)).min(axis=1)
    for chunk in (1, 7, 4096):  # chunk 7 splits both queries (90) and bank (36) unevenly
        image_scores, patch_maps = score_patches(memory, test, chunk=chunk)
        assert patch_maps.shape == (3, 5, 6)
        np.testing.assert_allclose(patch_maps.ravel(), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(image_scores, patch_maps.max(axis=(1, 2)))


def test_injected_defect_is_localised_and_scored() -> None:
    rng = np.random.default_rng(4)
    prototypes = rng.normal(0.0, 1.0, (4, 8))

    def normal_maps(n: int) -> np.ndarray:
        labels = rng.integers(0, 4, (n, 16, 16))
        features = prototypes[labels] + rng.normal(0, 0.1, (n, 16, 16, 8))
        return features.transpose(0, 3, 1, 2).astype(np.float32)

    memory = fit_patch_memory(normal_maps(12), coreset_fraction=0.2)
    test = normal_maps(4)
    test[3, :, 5:9, 9:13] = 3.0  # a 4 x 4 defect with unseen feature vectors
    image_scores, patch_maps = score_patches(memory, test)
    assert image_scores[3] > image_scores[:3].max()
    mask = np.zeros((64, 64), dtype=bool)
    mask[20:36, 36:52] = True  # the defect at 4x the feature resolution
    heat = anomaly_map(patch_maps[3], size=(64, 64))
    assert heat.shape == (64, 64) and heat.dtype == np.float32
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    assert mask[row, col]
    assert pixel_auroc(heat[None], mask[None]) > 0.9


def test_anomaly_map_resizes_bilinearly_and_smooths() -> None:
    patch = np.arange(12, dtype=np.float32).reshape(3, 4)
    plain = anomaly_map(patch, size=(6, 8), sigma=0)
    np.testing.assert_array_equal(plain, cv2.resize(patch, (8, 6), interpolation=cv2.INTER_LINEAR))
    smooth = anomaly_map(patch, size=(6, 8))
    assert smooth.shape == (6, 8) and smooth.std() < plain.std()
    np.testing.assert_allclose(anomaly_map(np.ones((2, 2)), (5, 3)), 1.0, rtol=1e-6)


def test_round_trip_is_exact() -> None:
    maps = np.random.default_rng(5).normal(size=(2, 5, 6, 6)).astype(np.float32)
    memory = fit_patch_memory(maps, coreset_fraction=0.2, seed=7, neighbourhood=5)
    meta = json.loads(json.dumps(memory.meta()))
    assert meta == {
        "kind": "patchcore", "version": 1, "channels": 5, "coreset_size": 15, "patches": 72,
        "coreset_fraction": 0.2, "neighbourhood": 5, "seed": 7, "projection_dim": 128,
    }  # fmt: skip
    arrays = {k: np.array(v) for k, v in memory.to_arrays().items()}
    restored = PatchMemory.from_arrays(arrays, meta)
    assert np.array_equal(restored.bank, memory.bank) and restored.meta() == memory.meta()
    test = np.random.default_rng(6).normal(size=(1, 5, 6, 6))
    assert np.array_equal(score_patches(restored, test)[1], score_patches(memory, test)[1])
    with pytest.raises(ValueError, match="kind"):
        PatchMemory.from_arrays(arrays, {**meta, "kind": "knn"})
    with pytest.raises(ValueError, match="shape"):
        PatchMemory.from_arrays({"bank": arrays["bank"][:3]}, meta)
    with pytest.raises(ValueError, match="float32"):
        PatchMemory.from_arrays({"bank": arrays["bank"].astype(np.float64)}, meta)


@pytest.mark.parametrize(
    ("maps", "kwargs", "message"),
    [
        (np.zeros((2, 3, 4)), {}, "4-D"),
        (np.zeros((0, 3, 4, 4)), {}, "non-empty"),
        (np.full((1, 2, 3, 3), np.nan), {}, "NaN"),
        (np.full((1, 2, 3, 3), np.inf), {}, "NaN or infinite"),
        (np.zeros((1, 2, 3, 3), dtype=bool), {}, "real numbers"),
        (np.zeros((1, 2, 3, 3)), {"coreset_fraction": 0.0}, "coreset_fraction"),
        (np.zeros((1, 2, 3, 3)), {"coreset_fraction": 1.5}, "coreset_fraction"),
        (np.zeros((1, 2, 3, 3)), {"neighbourhood": 2}, "odd"),
        (np.zeros((1, 2, 3, 3)), {"seed": -1}, "seed"),
    ],
)
def test_bad_fit_inputs_raise(maps: np.ndarray, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_patch_memory(maps, **kwargs)  # type: ignore[arg-type]


def test_bad_score_and_map_inputs_raise() -> None:
    memory = fit_patch_memory(np.ones((1, 3, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="channels"):
        score_patches(memory, np.ones((1, 4, 4, 4)))
    with pytest.raises(ValueError, match="chunk"):
        score_patches(memory, np.ones((1, 3, 4, 4)), chunk=0)
    with pytest.raises(ValueError, match="2-D"):
        anomaly_map(np.ones((1, 2, 2)), (4, 4))
    with pytest.raises(ValueError, match="height"):
        anomaly_map(np.ones((2, 2)), (0, 4))
    with pytest.raises(ValueError, match="sigma"):
        anomaly_map(np.ones((2, 2)), (4, 4), sigma=-1.0)
