"""ImageNet-C's 15 corruptions plus its 4 extras, each family in its own module.

Importing this package registers them all; use `corrupt(image, name, severity,
seed=..., index=...)`.
"""

from assay.server.robustness.corruptions import blur, digital, noise, weather  # noqa: F401  (registers)
from assay.server.robustness.corruptions.base import REGISTRY, SEVERITIES, Corruption, corrupt

IMAGENET_C = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
"""The 15 benchmark corruptions, in the paper's order."""
EXTRAS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
"""The 4 held-out corruptions."""

__all__ = ["EXTRAS", "IMAGENET_C", "REGISTRY", "SEVERITIES", "Corruption", "corrupt"]
