"""Adversarial attacks: the query-only Square Attack and white-box FGSM/PGD.

`square_attack` needs only an async scoring function, so it runs through any
backend (onnxruntime or Triton). `fgsm` and `pgd` need a differentiable torch
copy of the model (optional dependency, imported lazily).
"""

from assay.server.robustness.attacks.square import SquareResult, square_attack
from assay.server.robustness.attacks.whitebox import WhiteBoxResult, fgsm, load_torchscript, pgd

__all__ = ["SquareResult", "WhiteBoxResult", "fgsm", "load_torchscript", "pgd", "square_attack"]
