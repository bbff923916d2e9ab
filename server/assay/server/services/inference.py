"""InferenceService: Predict."""

from __future__ import annotations

import asyncio

import grpc

from assay.server.inference import Predictor
from assay.server.services.converters import predict_request_to_query, predict_result_to_proto
from assay.v1 import inference_pb2, inference_pb2_grpc


def loop_deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline as an absolute event-loop time (None = no deadline)."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    """Converts Predict calls to Predictor queries."""

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor

    async def Predict(
        self, request: inference_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.PredictResponse:
        """Predict a batch of images with one model."""
        query = predict_request_to_query(request)
        result = await self._predictor.predict(query, loop_deadline(context))
        return predict_result_to_proto(result)
