"""assay server: gRPC services over onnxruntime or Triton model backends."""

import os

# onnxruntime writes a telemetry id and an event database under $HOME/.cache when it
# is imported. A server writes only in its data folder (HOME is read-only in the
# container, and shared user state elsewhere), so that is off unless asked for.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__all__ = ["__version__"]

__version__ = "0.1.0"
