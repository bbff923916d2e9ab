"""A bare grpc.aio server answering Predict with a canned response: the transport ceiling.

It registers the same service and message types as assay, so requests and
responses have the same size; it does no decoding, batching or inference.
"""

from __future__ import annotations

import asyncio
import sys

import grpc

from assay.v1 import inference_pb2, inference_pb2_grpc


class Echo(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, response: inference_pb2.PredictResponse) -> None:
        self._response = response

    async def Predict(self, request, context):  # type: ignore[no-untyped-def]
        return self._response


async def main() -> None:
    response = inference_pb2.PredictResponse.FromString(sys.stdin.buffer.read())
    server = grpc.aio.server()
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(Echo(response), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"echo listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
