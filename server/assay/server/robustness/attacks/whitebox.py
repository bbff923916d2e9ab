"""White-box gradient attacks (FGSM and PGD, L∞ and L2) on a differentiable copy of a model.

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples",
ICLR 2015 (FGSM). Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep
Learning Models Resistant to Adversarial Attacks", ICLR 2018 (PGD).

With L the cross-entropy of model(preprocess(x)) and the true label y, and
g = ∇ₓL:

- FGSM, L∞: x' = clip(x + ε·sign(g), 0, 1); L2 (the fast gradient method):
  x' = clip(x + ε·g/||g||₂, 0, 1).
- PGD: x⁰ = x + uniform noise in the ε-ball (or x), then
  x^{t+1} = Π(x^t + a·sign(g)) for L∞, Π(x^t + a·g/||g||₂) for L2 (step a), where Π
  projects onto the ε-ball around x (clamping for L∞, rescaling δ to norm ε for
  L2) and then clips to [0, 1] (which only shrinks the perturbation).

The served model usually runs in onnxruntime or Triton; these attacks need a
differentiable copy: a TorchScript file (`load_torchscript`) or any
torch.nn.Module. torch is optional and imported lazily.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from assay.server.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from assay.server.robustness.attacks._inputs import Norm, validate_batch

Preprocess = Callable[[Any], Any]
"""Maps the N x H x W x C [0, 1] torch tensor to the model's input (e.g. normalise + NCHW)."""
MAX_BATCH = 64


def _torch() -> Any:
    """Import torch, or say how to get it."""
    try:
        import torch
    except ImportError as exc:
        raise FailedPreconditionError(
            "white-box attacks need PyTorch, which is not installed: install the 'train' "
            "extra (pip install 'assay[train]') and register a TorchScript copy of the model"
        ) from exc
    return torch


@dataclass(frozen=True, eq=False)
class WhiteBoxResult:
    """Outcome of a white-box attack.

    Attributes:
        adversarial: N x H x W x C float32 adversarial images in [0, 1].
        clean_correct: True where the model classifies the clean image correctly.
        adv_correct: True where it still classifies the adversarial image correctly.
        norm: The threat model, "linf" or "l2".
        epsilon: The radius of the ε-ball.
        max_perturbation: Largest perturbation norm actually used over the batch
            (in `norm`), computed from the returned float32 images.
    """

    adversarial: npt.NDArray[np.float32]
    clean_correct: npt.NDArray[np.bool_]
    adv_correct: npt.NDArray[np.bool_]
    norm: Norm
    epsilon: float
    max_perturbation: float

    @property
    def clean_accuracy(self) -> float:
        """Fraction of clean images classified correctly."""
        return float(self.clean_correct.mean())

    @property
    def robust_accuracy(self) -> float:
        """Fraction of adversarial images classified correctly."""
        return float(self.adv_correct.mean())


def load_torchscript(path: Path) -> Any:
    """Load a TorchScript model onto the CPU in eval mode.

    Raises:
        FailedPreconditionError: torch is not installed.
        NotFoundError: `path` is not a file.
    """
    torch = _torch()
    if not Path(path).is_file():
        raise NotFoundError(f"no TorchScript file at {path}")
    with warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript in favour of torch.export; the file is still valid.
        warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", DeprecationWarning)
        model = torch.jit.load(str(path), map_location="cpu")
    model.eval()
    return model


def _per_image_norm(torch: Any, t: Any, norm: Norm) -> Any:
    """L∞ or L2 norm of each image of an N x ... tensor, shaped N x 1 x 1 x 1."""
    flat = t.flatten(1)
    value = flat.abs().amax(dim=1) if norm == "linf" else flat.norm(p=2, dim=1)
    return value.view(-1, 1, 1, 1)


def _step(torch: Any, grad: Any, norm: Norm) -> Any:
    """Steepest-ascent direction of unit norm: sign(g) for L∞, g/||g||₂ for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / _per_image_norm(torch, grad, "l2").clamp_min(1e-12)


def _project(torch: Any, x: Any, adv: Any, norm: Norm, epsilon: float) -> Any:
    """Π: back into the ε-ball around x, then into [0, 1]."""
    delta = adv - x
    if norm == "linf":
        delta = delta.clamp(-epsilon, epsilon)
    else:
        scale = (epsilon / _per_image_norm(torch, delta, "l2").clamp_min(1e-12)).clamp(max=1.0)
        delta = delta * scale
    return (x + delta).clamp(0.0, 1.0)


def _gradient(torch: Any, model: Any, preprocess: Preprocess, adv: Any, y: Any) -> Any:
    """∇ₓ of the summed cross-entropy (per-image gradients, independent of the batch)."""
    with torch.enable_grad():
        adv = adv.detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(preprocess(adv)), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, adv)
    return grad.detach()


def _random_start(torch: Any, x: Any, norm: Norm, epsilon: float, gen: Any) -> Any:
    """Uniform noise in the ε-ball: L∞ box, or L2 ball (radius ε·u^{1/d}, Gaussian direction)."""
    if norm == "linf":
        noise = (torch.rand(x.shape, generator=gen) * 2 - 1) * epsilon
    else:
        direction = torch.randn(x.shape, generator=gen)
        direction = direction / _per_image_norm(torch, direction, "l2").clamp_min(1e-12)
        radius = torch.rand((x.shape[0], 1, 1, 1), generator=gen) ** (1.0 / x[0].numel())
        noise = direction * radius * epsilon
    return (x + noise.to(x.device)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class _Ascent:
    """Projected gradient ascent: `steps` steps of size `step` from x (or a seeded random start)."""

    norm: Norm
    epsilon: float
    step: float
    steps: int
    start_seed: int | None
    """Seed of the uniform start in the ε-ball; None starts at x itself."""


def _run(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    ascent: _Ascent,
    *,
    preprocess: Preprocess,
    batch_size: int,
) -> WhiteBoxResult:
    """Shared driver: validate, batch, run the ascent on each batch, score clean and adversarial."""
    torch = _torch()
    norm, epsilon = ascent.norm, ascent.epsilon
    x_all, y_all = validate_batch(images, labels, norm, epsilon)
    if not 1 <= batch_size <= MAX_BATCH:
        raise InvalidArgumentError(f"batch_size must be in [1, {MAX_BATCH}], got {batch_size}")
    model.eval()
    device = next(iter(model.parameters()), torch.zeros(0)).device
    gen = None if ascent.start_seed is None else torch.Generator().manual_seed(ascent.start_seed)
    adv_out = np.empty_like(x_all)
    clean_correct = np.empty(len(x_all), dtype=bool)
    adv_correct = np.empty(len(x_all), dtype=bool)
    for start in range(0, len(x_all), batch_size):
        part = slice(start, start + batch_size)
        x = torch.from_numpy(x_all[part]).to(device)
        y = torch.from_numpy(y_all[part]).to(device)
        adv = x.clone() if gen is None else _random_start(torch, x, norm, epsilon, gen)
        for _ in range(ascent.steps):
            grad = _gradient(torch, model, preprocess, adv, y)
            adv = _project(torch, x, adv + ascent.step * _step(torch, grad, norm), norm, epsilon)
            adv = adv.detach()
        with torch.no_grad():
            clean_pred = model(preprocess(x)).argmax(dim=1)
            adv_pred = model(preprocess(adv)).argmax(dim=1)
        adv_out[part] = adv.detach().cpu().numpy()
        clean_correct[part] = (clean_pred == y).cpu().numpy()
        adv_correct[part] = (adv_pred == y).cpu().numpy()
    delta = (adv_out.astype(np.float64) - x_all).reshape(len(x_all), -1)
    used = np.abs(delta).max(axis=1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    return WhiteBoxResult(
        adv_out, clean_correct, adv_correct, norm, float(epsilon), float(used.max())
    )


def fgsm(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epsilon: float,
    preprocess: Preprocess,
    norm: Norm = "linf",
    batch_size: int = MAX_BATCH,
) -> WhiteBoxResult:
    """One-step attack: x' = clip(x + ε·sign(∇ₓL), 0, 1) (L∞) or x + ε·g/||g||₂ (L2).

    Args:
        model: A torch.nn.Module or TorchScript module returning N x K logits.
        images: Float32 N x H x W x C images in [0, 1].
        labels: N true class indices.
        epsilon: Radius of the ε-ball.
        preprocess: Maps the [0, 1] NHWC tensor to the model's input; gradients
            flow through it.
        norm: "linf" (FGSM proper) or "l2" (the fast gradient method).
        batch_size: Images per forward/backward pass (at most 64).

    Raises:
        FailedPreconditionError: torch is not installed.
        InvalidArgumentError: Bad shapes, pixel range, norm or ε.
    """
    # FGSM is a single PGD step of size ε taken from x itself (no random start).
    ascent = _Ascent(norm, epsilon, step=epsilon, steps=1, start_seed=None)
    return _run(model, images, labels, ascent, preprocess=preprocess, batch_size=batch_size)


def pgd(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    norm: Norm,
    epsilon: float,
    steps: int,
    preprocess: Preprocess,
    step_size: float | None = None,
    random_start: bool = True,
    seed: int = 0,
    batch_size: int = MAX_BATCH,
) -> WhiteBoxResult:
    """Projected gradient descent: x^{t+1} = Π(x^t + a·s(∇ₓL)), s = sign (L∞) or g/||g||₂ (L2).

    Args:
        model: A torch.nn.Module or TorchScript module returning N x K logits.
        images: Float32 N x H x W x C images in [0, 1].
        labels: N true class indices.
        norm: "linf" or "l2".
        epsilon: Radius of the ε-ball.
        steps: Number of gradient steps (≥ 1).
        preprocess: Maps the [0, 1] NHWC tensor to the model's input; gradients
            flow through it.
        step_size: The step a; default 2.5·ε/steps (Madry et al.'s choice, so the
            iterates can cross the ball).
        random_start: Start from uniform noise in the ε-ball instead of x.
        seed: Seed of the random start.
        batch_size: Images per forward/backward pass (at most 64).

    Raises:
        FailedPreconditionError: torch is not installed.
        InvalidArgumentError: Bad shapes, pixel range, norm, ε, steps or step size.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidArgumentError(f"steps must be an integer >= 1, got {steps!r}")
    alpha = 2.5 * epsilon / steps if step_size is None else step_size
    if not (np.isfinite(alpha) and alpha > 0):
        raise InvalidArgumentError(f"step_size must be finite and > 0, got {step_size}")
    ascent = _Ascent(norm, epsilon, alpha, steps, start_seed=seed if random_start else None)
    return _run(model, images, labels, ascent, preprocess=preprocess, batch_size=batch_size)
