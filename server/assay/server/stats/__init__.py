"""Shared statistics: one metric family per module, used by every capability.

Capability packages (``robustness``, ``ood``, ``aigen``, and later ``gate`` and
``monitoring``) import from here and never from each other, so a metric is
written, tested and mutation-checked once (the model is anomalib's
``metrics/``: one file per metric, shared by every model).

* :mod:`~assay.server.stats.arrays`: the numpy array aliases.
* :mod:`~assay.server.stats.estimate`: `Estimate` (a value with its interval)
  and its JSON form, the ``E`` of every report schema.
* :mod:`~assay.server.stats.bootstrap`: percentile bootstrap intervals, paired
  (the same rows for every array) and stratified.
* :mod:`~assay.server.stats.ranking`: AUROC, average precision and FPR@TPR,
  vectorised over bootstrap resamples.
* :mod:`~assay.server.stats.order_statistics`: which order statistic meets a
  target rate exactly in float64 (thresholds at a TPR or an FPR).
* :mod:`~assay.server.stats.softmax`: stable log-sum-exp, log-softmax, softmax.
* :mod:`~assay.server.stats.bincount`: per-row (batched) bincount.

Domain code only: numpy in, numbers and dataclasses out; no grpc, no I/O.
"""
