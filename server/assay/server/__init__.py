"""assay server: gRPC services over onnxruntime or Triton model backends."""

__all__ = ["__version__"]

__version__ = "0.1.0"
