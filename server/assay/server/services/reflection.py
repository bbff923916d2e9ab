"""Server reflection under both names: grpc.reflection.v1 and grpc.reflection.v1alpha.

grpcio-reflection serves only v1alpha, while current tools (grpcurl, buf curl,
Postman) ask for v1 first. v1 is the same protocol: identical messages and
field numbers, only the proto package differs. So one reflection servicer
answers both, v1 calls being decoded and encoded with the v1alpha messages
(the bytes are the same), and v1's descriptor (v1alpha's with the package
renamed) is added to the pool so that v1 can itself be reflected.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE: str = reflection.SERVICE_NAME
_V1_FILE = "grpc/reflection/v1/reflection.proto"
_V1ALPHA_PREFIX = ".grpc.reflection.v1alpha."
_V1_PREFIX = ".grpc.reflection.v1."


def _rename(type_name: str) -> str:
    return type_name.replace(_V1ALPHA_PREFIX, _V1_PREFIX, 1)


def _rename_fields(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        if field.HasField("type_name"):  # scalars have none; setting "" would break them
            field.type_name = _rename(field.type_name)
    for nested in message.nested_type:
        _rename_fields(nested)


def v1_file(pool: descriptor_pool.DescriptorPool) -> FileDescriptor:
    """grpc/reflection/v1/reflection.proto in ``pool``, added from v1alpha's when missing."""
    try:
        return pool.FindFileByName(_V1_FILE)
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = _V1_FILE, "grpc.reflection.v1"
    proto.ClearField("options")  # v1alpha's are deprecated=true and its Java package
    for message in proto.message_type:
        _rename_fields(message)
    for service in proto.service:
        for method in service.method:
            method.input_type = _rename(method.input_type)
            method.output_type = _rename(method.output_type)
    pool.AddSerializedFile(proto.SerializeToString())
    return pool.FindFileByName(_V1_FILE)


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection (v1 and v1alpha) for ``service_names`` and for reflection itself."""
    v1_file(descriptor_pool.Default())
    servicer = reflection.aio.ReflectionServicer((*service_names, V1_SERVICE, V1ALPHA_SERVICE))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(
        V1_SERVICE,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))
