"""DatasetService: streamed uploads, listing and deletion of uploaded datasets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from assay.server.dataset_catalog import UploadedDatasets
from assay.server.errors import InvalidArgumentError
from assay.server.services.pagination import page_of
from assay.server.services.timestamps import timestamp
from assay.server.store.records import DatasetRecord
from assay.server.uploads import DatasetUpload
from assay.v1 import datasets_pb2, datasets_pb2_grpc


class DatasetServicer(datasets_pb2_grpc.DatasetServiceServicer):
    """Converts upload streams and requests to `UploadedDatasets` calls."""

    def __init__(self, datasets: UploadedDatasets) -> None:
        self._datasets = datasets

    async def UploadDataset(
        self,
        request_iterator: AsyncIterator[datasets_pb2.UploadDatasetRequest],
        context: grpc.aio.ServicerContext,
    ) -> datasets_pb2.UploadDatasetResponse:
        """Receive a header, then chunks; commit at the end of the stream."""
        upload: DatasetUpload | None = None
        name = ""
        try:
            async for message in request_iterator:
                if message.HasField("header"):
                    if name:
                        raise InvalidArgumentError("only the first message may be a header")
                    name = message.header.name or "(no name)"
                    upload = await self._datasets.begin(message.header.name, message.header.replace)
                elif upload is None:
                    raise InvalidArgumentError("the first message must be a DatasetHeader")
                else:
                    await upload.add(message.chunk.path, message.chunk.data)
            if upload is None:
                raise InvalidArgumentError("empty upload: send a DatasetHeader, then file chunks")
            record = await self._datasets.commit(upload, context.peer())
        except BaseException as exc:
            if name:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                await self._datasets.fail(name, upload, context.peer(), reason)
            raise
        return datasets_pb2.UploadDatasetResponse(
            path=str(self._datasets.folder.path(record.name)),
            files=record.files,
            bytes=record.bytes,
        )

    async def ListDatasets(
        self, request: datasets_pb2.ListDatasetsRequest, context: grpc.aio.ServicerContext
    ) -> datasets_pb2.ListDatasetsResponse:
        """Uploaded datasets by name, one page at a time."""
        found, token = page_of(
            request, {"rpc": "ListDatasets"}, await self._datasets.all(), lambda d: (d.name,)
        )
        return datasets_pb2.ListDatasetsResponse(
            datasets=[self._dataset(d) for d in found], next_page_token=token
        )

    async def DeleteDataset(
        self, request: datasets_pb2.DeleteDatasetRequest, context: grpc.aio.ServicerContext
    ) -> datasets_pb2.Dataset:
        """Delete an uploaded dataset; returns what was deleted."""
        return self._dataset(await self._datasets.delete(request.name, context.peer()))

    def _dataset(self, record: DatasetRecord) -> datasets_pb2.Dataset:
        return datasets_pb2.Dataset(
            name=record.name,
            path=str(self._datasets.folder.path(record.name)),
            version=record.version,
            files=record.files,
            bytes=record.bytes,
            created_at=timestamp(record.created_at),
            uploaded_by=record.uploaded_by,
        )
