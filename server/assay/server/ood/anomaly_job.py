"""Anomaly-detection evaluation on an MVTec-style folder, as a job ("anomaly_evaluation").

Scores test/good and every test/<defect> image with the profile's PatchCore
memory; image AUROC always, and where ground_truth masks exist, pixel
AUROC, AUPRO (Bergmann et al. 2021) and per-image AUPIMO (Bertoldo et al. 2024).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from assay.server.datasets import IMAGE_SUFFIXES
from assay.server.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from assay.server.jobs.manager import JobContext
from assay.server.ood.evaluation import aupimo, aupro, auroc, pixel_auroc
from assay.server.ood.service import ProfileJobs
from assay.server.ood.specs import AnomalyEvaluationSpec

SCHEMA = "assay.anomaly.evaluation/v1"


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


class AnomalyEvaluations(ProfileJobs):
    """The "anomaly_evaluation" job kind."""

    kind = "anomaly_evaluation"
    spec_type = AnomalyEvaluationSpec

    def _layout(
        self, spec: AnomalyEvaluationSpec
    ) -> tuple[Path, list[Path], dict[str, list[Path]]]:
        root = self._data.roots.check(Path(spec.dataset))
        if not root.is_dir():
            raise NotFoundError(f"anomaly dataset {spec.dataset} is not a folder")
        good = _images(root / "test" / "good")
        defects = {
            d.name: _images(d)
            for d in sorted((root / "test").glob("*"))
            if d.is_dir() and d.name != "good"
        }
        if not good or not any(defects.values()):
            raise InvalidArgumentError(
                f"{spec.dataset} needs test/good/ and at least one test/<defect>/ folder of images"
            )
        return root, good, defects

    def prepare(self, spec: AnomalyEvaluationSpec) -> int:
        """Check the model and the folder layout."""
        self._registry.get(spec.model, spec.version)
        self._layout(spec)
        return 1

    async def run(self, context: JobContext[AnomalyEvaluationSpec]) -> dict[str, Any]:
        """Score every test image; metrics over images and, with masks, pixels."""
        spec = context.spec
        root, good, defects = self._layout(spec)
        paths = good + [p for ps in defects.values() for p in ps]
        labels = np.r_[np.zeros(len(good)), np.ones(len(paths) - len(good))]
        images = await self._profiles.load_images(paths)
        model, results = await self._profiles.detect_anomaly(spec.model, spec.version, images, True)
        if not results:
            raise FailedPreconditionError("no anomaly results")
        scores = np.array([r.score for r in results])
        maps = np.stack([r.map for r in results if r.map is not None])
        report: dict[str, Any] = {
            "schema": SCHEMA,
            "model": {"name": model.name, "version": model.config.version},
            "dataset": {
                "source": str(root),
                "good": len(good),
                "defect": {k: len(v) for k, v in defects.items()},
            },
            "image_auroc": auroc(scores[labels == 0], scores[labels == 1]),
            "pixel_auroc": None,
            "aupro": None,
            "aupimo": None,
        }
        masks = self._masks(root, paths, good, maps.shape[1:])
        if masks is not None:
            report["pixel_auroc"] = pixel_auroc(maps, masks)
            report["aupro"] = aupro(maps, masks)
            pimo = aupimo(maps, masks)
            names = [paths[i].name for i in pimo.image_indices]
            report["aupimo"] = dict(zip(names, (float(s) for s in pimo.scores), strict=True))
        return report

    @staticmethod
    def _masks(
        root: Path, paths: list[Path], good: list[Path], size: tuple[int, ...]
    ) -> np.ndarray | None:
        """Masks at map size (empty for good images); None when a defect lacks its mask."""
        masks = []
        for path in paths:
            if path in good:
                masks.append(np.zeros(size, bool))
                continue
            mask_path = root / "ground_truth" / path.parent.name / f"{path.stem}_mask.png"
            if not mask_path.exists():
                return None
            with Image.open(mask_path) as mask:
                small = mask.convert("L").resize((size[1], size[0]), Image.Resampling.NEAREST)
            masks.append(np.asarray(small) > 127)
        return np.stack(masks)
