"""Square Attack against the committed digits CNN; FGSM/PGD against a small torch CNN."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from assay.server.errors import (
    BackendError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from assay.server.robustness.attacks import (
    SquareResult,
    fgsm,
    load_torchscript,
    pgd,
    square_attack,
)
from assay.server.robustness.attacks._square_sampling import eta, p_schedule
from tests.conftest import DIGITS_ONNX, SAMPLES

Score = Callable[[np.ndarray], Awaitable[np.ndarray]]

# --------------------------------------------------------------------------- Square Attack


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 20 committed sample digits as N x 28 x 28 x 1 floats in [0, 1], with their labels."""
    images = np.stack([np.asarray(Image.open(p).convert("L"), np.float32) / 255 for p in SAMPLES])
    labels = np.array([int(p.name[0]) for p in SAMPLES])
    assert images.shape == (20, 28, 28)
    return images[..., None], labels


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(DIGITS_ONNX), options, providers=["CPUExecutionProvider"])


class Recorder:
    """The digits model as an async scorer, recording every batch size."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.sizes: list[int] = []

    async def __call__(self, batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.float32 and batch.min() >= 0.0 and batch.max() <= 1.0
        self.sizes.append(len(batch))
        image = ((batch.transpose(0, 3, 1, 2) - 0.5) / 0.5).astype(np.float32)
        logits: np.ndarray = self.session.run(["logits"], {"image": image})[0]
        return logits


async def attack(
    session: ort.InferenceSession,
    digits: tuple[np.ndarray, np.ndarray],
    norm: Any,
    epsilon: float,
    budget: int,
    seed: int = 0,
) -> tuple[SquareResult, Recorder]:
    score = Recorder(session)
    images, labels = digits
    result = await square_attack(
        score, images, labels, norm=norm, epsilon=epsilon, max_queries=budget,
        rng=np.random.default_rng(seed),
    )  # fmt: skip
    return result, score


def check_bookkeeping(result: SquareResult, score: Recorder, budget: int) -> None:
    """Queries within budget; each call scored exactly the images still unbroken."""
    assert result.queries.max() <= budget
    assert result.score_calls == len(score.sizes) <= budget + 1
    assert score.sizes == sorted(score.sizes, reverse=True)
    assert score.sizes[0] == len(result.queries)  # the clean scoring
    assert (result.queries[~result.clean_correct] == 0).all()
    # Call j >= 1 scores every image that has spent at least j queries.
    expected = [int((result.queries >= j).sum()) for j in range(1, len(score.sizes))]
    assert score.sizes[1:] == expected
    # Unbroken images used the whole budget; broken ones stopped at once.
    assert (result.queries[~result.success] == budget).all()


@pytest.mark.parametrize(
    ("norm", "epsilon"), [("linf", 0.3), ("l2", 3.0)], ids=["linf", "l2"]
)  # fmt: skip
async def test_square_attack_breaks_digits_cnn(
    session: ort.InferenceSession, digits: tuple[np.ndarray, np.ndarray], norm: str, epsilon: float
) -> None:
    images, _ = digits
    result, score = await attack(session, digits, norm, epsilon, budget=300)
    # Measured over seeds 0-2: clean 1.00, robust 0.00 for both norms (median 1 query).
    assert result.clean_accuracy >= 0.95
    assert result.robust_accuracy <= result.clean_accuracy - 0.8
    assert result.success_rate >= 0.85
    assert result.median_queries <= 30
    delta = (result.adversarial.astype(np.float64) - images).reshape(len(images), -1)
    if norm == "linf":
        assert np.abs(delta).max() <= epsilon + 1e-6
    else:
        assert np.linalg.norm(delta, axis=1).max() <= epsilon + 1e-4
    assert result.adversarial.dtype == np.float32
    assert result.adversarial.min() >= 0.0 and result.adversarial.max() <= 1.0
    check_bookkeeping(result, score, budget=300)


@pytest.mark.parametrize(("norm", "epsilon"), [("linf", 0.1), ("l2", 1.0)], ids=["linf", "l2"])
async def test_square_search_beats_its_initialisation(
    session: ort.InferenceSession, digits: tuple[np.ndarray, np.ndarray], norm: str, epsilon: float
) -> None:
    # Measured (seeds 0-2), robust accuracy: init only 0.55 (linf) / 0.8-0.9 (l2);
    # after 300 queries 0.05-0.2 (linf) / 0.25-0.3 (l2).
    init_only, score = await attack(session, digits, norm, epsilon, budget=1)
    assert init_only.score_calls == 2 and set(init_only.queries.tolist()) <= {0, 1}
    searched, score = await attack(session, digits, norm, epsilon, budget=300)
    assert searched.robust_accuracy <= init_only.robust_accuracy - 0.3
    check_bookkeeping(searched, score, budget=300)


async def test_square_attack_is_deterministic_per_seed(
    session: ort.InferenceSession, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    first, _ = await attack(session, digits, "l2", 1.0, budget=50, seed=7)
    again, _ = await attack(session, digits, "l2", 1.0, budget=50, seed=7)
    other, _ = await attack(session, digits, "l2", 1.0, budget=50, seed=8)
    assert np.array_equal(first.adversarial, again.adversarial)
    assert np.array_equal(first.queries, again.queries) and first.score_calls == again.score_calls
    assert not np.array_equal(first.adversarial, other.adversarial)


async def test_initially_wrong_images_cost_no_queries(
    session: ort.InferenceSession, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digits
    wrong = labels.copy()
    wrong[:3] = (labels[:3] + 1) % 10
    score = Recorder(session)
    result = await square_attack(
        score, images, wrong, norm="linf", epsilon=0.01, max_queries=5,
        rng=np.random.default_rng(0),
    )  # fmt: skip
    assert result.initially_wrong[:3].all() and result.success[:3].all()
    assert (result.queries[:3] == 0).all()
    assert np.array_equal(result.adversarial[:3], images[:3])
    assert score.sizes[1] == int(result.clean_correct.sum()) <= 17
    check_bookkeeping(result, score, budget=5)


def test_result_statistics() -> None:
    result = SquareResult(
        adversarial=np.zeros((4, 2, 2, 1), np.float32),
        success=np.array([True, True, False, True]),
        queries=np.array([0, 4, 10, 10]),
        score_calls=11,
        clean_correct=np.array([False, True, True, True]),
    )
    assert result.robust_accuracy == 0.25 and result.clean_accuracy == 0.75
    assert result.success_rate == pytest.approx(2 / 3)
    assert result.median_queries == 7.0 and result.mean_queries == 7.0
    none = SquareResult(result.adversarial, np.zeros(4, bool), np.ones(4, int), 2, np.ones(4, bool))
    assert np.isnan(none.median_queries) and np.isnan(none.mean_queries)


def test_schedule_and_pattern() -> None:
    assert p_schedule(0.05, 0, 10_000) == 0.05
    assert p_schedule(0.05, 11, 10_000) == 0.025
    assert p_schedule(0.05, 9_999, 10_000) == pytest.approx(0.05 / 512)
    assert p_schedule(0.05, 150, 300) == pytest.approx(0.05 / 128)  # 5000 of 10 000: 7 halvings
    pattern = eta(5, 5)
    assert pattern[2, 2] == pattern.max() and pattern[0, 0] == pattern.min() > 0
    assert np.allclose(pattern, pattern.T) and np.allclose(pattern, pattern[::-1, ::-1])


async def _never(batch: np.ndarray) -> np.ndarray:
    raise AssertionError("validation must fail before scoring")


@pytest.mark.parametrize(
    ("images", "labels", "kwargs"),
    [
        (np.zeros((2, 4, 4)), np.zeros(2, int), {}),
        (np.full((2, 4, 4, 1), 1.5), np.zeros(2, int), {}),
        (np.zeros((2, 4, 4, 1), np.uint8), np.zeros(2, int), {}),
        (np.zeros((2, 4, 4, 1)), np.zeros(3, int), {}),
        (np.zeros((2, 4, 4, 1)), np.zeros(2, int), {"epsilon": 0.0}),
        (np.zeros((2, 4, 4, 1)), np.zeros(2, int), {"max_queries": 0}),
        (np.zeros((2, 4, 4, 1)), np.zeros(2, int), {"norm": "l1"}),
    ],
)
async def test_square_attack_validates_inputs(
    images: np.ndarray, labels: np.ndarray, kwargs: dict[str, Any]
) -> None:
    options: dict[str, Any] = {"norm": "linf", "epsilon": 0.1, "max_queries": 10, **kwargs}
    with pytest.raises(InvalidArgumentError):
        await square_attack(_never, images, labels, rng=np.random.default_rng(0), **options)


async def test_square_attack_checks_scores_and_labels() -> None:
    async def flat(batch: np.ndarray) -> np.ndarray:
        return np.zeros(len(batch))

    async def three(batch: np.ndarray) -> np.ndarray:
        return np.zeros((len(batch), 3))

    images, rng = np.zeros((2, 4, 4, 1)), np.random.default_rng(0)
    with pytest.raises(BackendError, match="M x K"):
        await square_attack(
            flat, images, np.zeros(2, int), norm="l2", epsilon=1, max_queries=3, rng=rng
        )
    with pytest.raises(InvalidArgumentError, match="labels"):
        await square_attack(
            three, images, np.array([0, 3]), norm="l2", epsilon=1, max_queries=3, rng=rng
        )


# --------------------------------------------------------------------------- FGSM / PGD


def test_whitebox_without_torch_fails_precondition(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    images, labels = np.zeros((2, 4, 4, 1), np.float32), np.zeros(2, int)
    with pytest.raises(FailedPreconditionError, match=r"'train' extra.*TorchScript"):
        fgsm(object(), images, labels, epsilon=0.1, preprocess=lambda t: t)
    with pytest.raises(FailedPreconditionError, match="PyTorch"):
        load_torchscript(Path("model.pt"))


@pytest.fixture(scope="module")
def cnn() -> tuple[Any, Callable[[Any], Any], np.ndarray, np.ndarray]:
    """A seeded random CNN, its preprocessing, and 40 images labelled with its own predictions."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Tanh(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Tanh(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 32), nn.Tanh(), nn.Linear(32, 5),
    )  # fmt: skip
    model.eval()

    def preprocess(t: Any) -> Any:
        return ((t - 0.5) / 0.25).permute(0, 3, 1, 2)

    images = np.random.default_rng(0).random((40, 16, 16, 3), dtype=np.float32)
    with torch.no_grad():
        labels = model(preprocess(torch.from_numpy(images))).argmax(dim=1).numpy()
    assert len(set(labels.tolist())) >= 3
    return model, preprocess, images, labels


# Measured: FGSM robust accuracy 0.45 (linf, ε=0.01) and 0.65 (l2, ε=0.1); PGD equal or lower.
@pytest.mark.parametrize(("norm", "epsilon"), [("linf", 0.01), ("l2", 0.1)], ids=["linf", "l2"])
def test_fgsm_and_pgd_stay_in_ball_and_pgd_is_stronger(
    cnn: tuple[Any, Callable[[Any], Any], np.ndarray, np.ndarray], norm: Any, epsilon: float
) -> None:
    model, preprocess, images, labels = cnn
    one = fgsm(model, images, labels, epsilon=epsilon, norm=norm, preprocess=preprocess)
    many = pgd(model, images, labels, norm=norm, epsilon=epsilon, steps=10, preprocess=preprocess)
    tolerance = 1e-6 if norm == "linf" else 1e-4
    for result in (one, many):
        assert result.clean_accuracy == 1.0
        delta = (result.adversarial.astype(np.float64) - images).reshape(len(images), -1)
        used = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
        assert result.max_perturbation == pytest.approx(used.max())
        assert epsilon * 0.9 <= result.max_perturbation <= epsilon + tolerance
        assert result.adversarial.min() >= 0.0 and result.adversarial.max() <= 1.0
    assert one.robust_accuracy <= 0.8
    assert many.robust_accuracy <= one.robust_accuracy


def test_pgd_one_full_step_is_fgsm_and_batching_is_invisible(
    cnn: tuple[Any, Callable[[Any], Any], np.ndarray, np.ndarray],
) -> None:
    model, preprocess, images, labels = cnn
    one = fgsm(model, images, labels, epsilon=0.02, preprocess=preprocess)
    step = pgd(
        model, images, labels, norm="linf", epsilon=0.02, steps=1, step_size=0.02,
        random_start=False, preprocess=preprocess, batch_size=7,
    )  # fmt: skip
    np.testing.assert_allclose(step.adversarial, one.adversarial, atol=1e-6)
    seeded = [
        pgd(model, images, labels, norm="l2", epsilon=0.2, steps=3, seed=3, preprocess=preprocess)
        for _ in range(2)
    ]
    assert np.array_equal(seeded[0].adversarial, seeded[1].adversarial)
    with pytest.raises(InvalidArgumentError):
        pgd(model, images, labels, norm="linf", epsilon=0.1, steps=0, preprocess=preprocess)
    with pytest.raises(InvalidArgumentError):
        fgsm(model, images, labels, epsilon=0.1, preprocess=preprocess, batch_size=65)


@pytest.mark.parametrize(
    ("images", "labels", "epsilon", "message"),
    [
        (np.zeros((2, 0, 4, 1)), np.zeros(2, int), 0.1, "non-empty N x H x W x C"),
        (np.zeros((2, 4, 4, 1), int), np.zeros(2, int), 0.1, "float in"),
        (np.full((2, 4, 4, 1), 1.5), np.zeros(2, int), 0.1, "finite and in"),
        (np.zeros((2, 4, 4, 1)), np.zeros(3, int), 0.1, "labels must be 2 integers"),
        (np.zeros((2, 4, 4, 1)), np.zeros(2, int), float("inf"), "epsilon must be finite"),
    ],
)
async def test_every_attack_refuses_the_same_batches_alike(
    cnn: tuple[Any, Callable[[Any], Any], np.ndarray, np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    epsilon: float,
    message: str,
) -> None:
    """Square and FGSM/PGD share one input contract (zero-size images included)."""
    model, preprocess = cnn[:2]
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidArgumentError, match=message):
        await square_attack(
            _never, images, labels, norm="linf", epsilon=epsilon, max_queries=3, rng=rng
        )
    with pytest.raises(InvalidArgumentError, match=message):
        fgsm(model, images, labels, epsilon=epsilon, preprocess=preprocess)
    with pytest.raises(InvalidArgumentError, match=message):
        pgd(
            model, images, labels, norm="l2", epsilon=epsilon, steps=1, step_size=0.1,
            preprocess=preprocess,
        )  # fmt: skip


def test_pgd_on_torchscript_copy(
    cnn: tuple[Any, Callable[[Any], Any], np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    import torch

    model, preprocess, images, labels = cnn
    path = tmp_path / "cnn.pt"
    with (
        warnings.catch_warnings()
    ):  # torch 2.13 deprecates TorchScript; load_torchscript must not warn
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        torch.jit.save(torch.jit.trace(model, preprocess(torch.from_numpy(images[:2]))), str(path))
    scripted = load_torchscript(path)
    eager = pgd(model, images, labels, norm="linf", epsilon=0.01, steps=5, preprocess=preprocess)
    result = pgd(
        scripted, images, labels, norm="linf", epsilon=0.01, steps=5, preprocess=preprocess
    )
    assert result.clean_accuracy == 1.0
    assert result.max_perturbation <= 0.01 + 1e-6
    assert result.robust_accuracy == eager.robust_accuracy
    np.testing.assert_allclose(result.adversarial, eager.adversarial, atol=1e-5)
    with pytest.raises(NotFoundError):
        load_torchscript(tmp_path / "missing.pt")


@pytest.mark.parametrize(("norm", "epsilon"), [("linf", 0.1), ("l2", 2.0)], ids=["linf", "l2"])
async def test_square_attack_on_colour_images_stays_in_ball(norm: Any, epsilon: float) -> None:
    weights = np.random.default_rng(1).normal(size=(12 * 12 * 3, 4))

    async def linear(batch: np.ndarray) -> np.ndarray:
        logits: np.ndarray = batch.reshape(len(batch), -1) @ weights
        return logits

    images = np.random.default_rng(2).random((6, 12, 12, 3), dtype=np.float32)
    labels = (images.reshape(6, -1) @ weights).argmax(axis=1)
    result = await square_attack(
        linear, images, labels, norm=norm, epsilon=epsilon, max_queries=100,
        rng=np.random.default_rng(0),
    )  # fmt: skip
    # A pixel-wise random linear model is hard for squares; measured 0.5-0.67 (linf), 0.67-0.83 (l2).
    assert result.clean_accuracy == 1.0 and result.success_rate >= 0.3
    delta = (result.adversarial.astype(np.float64) - images).reshape(6, -1)
    used = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert used.max() <= epsilon + (1e-6 if norm == "linf" else 1e-4)
    assert result.adversarial.min() >= 0.0 and result.adversarial.max() <= 1.0
