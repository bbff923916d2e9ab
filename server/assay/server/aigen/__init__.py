"""AI-generated image detection: native-resolution tiling, verdict stability, calibration.

Domain code only: numpy in, dataclasses out; nothing here imports grpc.

Detectors of generated images such as CNNDetection (Wang et al., CVPR 2020),
NPR (Tan et al., CVPR 2024) and UnivFD (Ojha et al., CVPR 2023) key on
up-sampling and spectral artifacts that any resampling of the input destroys,
and their verdicts are known to flip after an ordinary JPEG re-save (see the
SIDBench evaluation framework, Schinas & Papadopoulos, 2024). Accordingly:

* :mod:`~assay.server.aigen.tiling`: native-resolution crops (never resized;
  reflection padding only when the image is smaller than the crop) and
  aggregation of per-crop scores.
* :mod:`~assay.server.aigen.stability`: ordinary re-encoding variants (JPEG
  re-saves, down-scaling, mild blur) and the three-way verdict
  ``GENERATED`` / ``REAL`` / ``UNSURE``.
* :mod:`~assay.server.aigen.calibration`: a per-detector threshold at a target
  false-positive rate on real images, numpy AP/AUROC, and a log-odds ensemble.
"""
