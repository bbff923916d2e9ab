"""DatasetService: streamed uploads into the server's data folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from assay.server.errors import InvalidArgumentError
from assay.server.uploads import DatasetUpload
from assay.v1 import datasets_pb2, datasets_pb2_grpc


class DatasetServicer(datasets_pb2_grpc.DatasetServiceServicer):
    """Converts upload streams to a DatasetUpload."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self._root = root
        self._max_bytes = max_bytes

    async def UploadDataset(
        self,
        request_iterator: AsyncIterator[datasets_pb2.UploadDatasetRequest],
        context: grpc.aio.ServicerContext,
    ) -> datasets_pb2.UploadDatasetResponse:
        """Receive a header, then chunks; commit at the end of the stream."""
        upload: DatasetUpload | None = None
        try:
            async for message in request_iterator:
                if message.HasField("header"):
                    if upload is not None:
                        raise InvalidArgumentError("only the first message may be a header")
                    header = message.header
                    upload = DatasetUpload(self._root, header.name, header.replace, self._max_bytes)
                elif upload is None:
                    raise InvalidArgumentError("the first message must be a DatasetHeader")
                else:
                    upload.add(message.chunk.path, message.chunk.data)
            if upload is None:
                raise InvalidArgumentError("empty upload: send a DatasetHeader, then file chunks")
            done = upload.commit()
        except BaseException:
            if upload is not None:
                upload.abort()
            raise
        return datasets_pb2.UploadDatasetResponse(
            path=str(done.path), files=done.files, bytes=done.bytes
        )
