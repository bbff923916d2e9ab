"""ModelService: list and describe registered models."""

from __future__ import annotations

import grpc

from assay.server.errors import InvalidArgumentError
from assay.server.models.registry import ModelRegistry
from assay.server.services.converters import model_to_proto
from assay.server.services.pagination import page_of
from assay.v1 import models_pb2, models_pb2_grpc


class ModelServicer(models_pb2_grpc.ModelServiceServicer):
    """Converts ModelService calls to registry lookups."""

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ListModelsResponse:
        """Registered models by name then version, one page at a time."""
        models, token = page_of(
            request,
            {"rpc": "ListModels"},
            self._registry.all(),
            lambda m: (m.name, m.config.version),
        )
        return models_pb2.ListModelsResponse(
            models=[model_to_proto(m) for m in models], next_page_token=token
        )

    async def GetModel(
        self, request: models_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ModelInfo:
        """One model by name and optional version."""
        if not request.model.name:
            raise InvalidArgumentError("model.name is empty; name the model to describe")
        return model_to_proto(self._registry.get(request.model.name, request.model.version))
