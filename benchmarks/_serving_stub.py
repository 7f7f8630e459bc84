"""The transport floor for bench_serving: a bare grpc.aio ModelInfer and a bare asyncio HTTP/1.1
responder on one event loop, as in an edgerun worker, answering every request with the same 1x10
FP32 output without reading it. Whatever edgerun adds on top of this is its own overhead.

    python benchmarks/_serving_stub.py GRPC_PORT HTTP_PORT
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from edgerun.serving.protos import grpc_service_pb2 as pb
from edgerun.serving.protos import grpc_service_pb2_grpc as pb_grpc

OUTPUT = bytes(40)  # float32 [1, 10]
HEADER = json.dumps({"model_name": "mlp", "model_version": "1", "outputs": [
    {"name": "y", "datatype": "FP32", "shape": [1, 10], "parameters": {"binary_data_size": len(OUTPUT)}}]}).encode()
HTTP_BODY = HEADER + OUTPUT
HTTP_HEAD = (f"HTTP/1.1 200 OK\r\nContent-Length: {len(HTTP_BODY)}\r\nConnection: keep-alive\r\n"
             "Content-Type: application/octet-stream\r\n"
             f"Inference-Header-Content-Length: {len(HEADER)}\r\n\r\n").encode()


class Stub(pb_grpc.GRPCInferenceServiceServicer):
    async def ModelInfer(self, request, context):
        response = pb.ModelInferResponse(model_name="mlp", model_version="1")
        response.outputs.add(name="y", datatype="FP32", shape=[1, 10])
        response.raw_output_contents.append(OUTPUT)
        return response


class HttpStub(asyncio.Protocol):
    """Answers each complete Content-Length request with the canned response."""

    def connection_made(self, transport) -> None:
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                if key.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            self.transport.write(HTTP_HEAD + HTTP_BODY)


async def main(grpc_port: int, http_port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Stub(), server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    await asyncio.get_running_loop().create_server(HttpStub, "127.0.0.1", http_port)
    print("serving gRPC on stub", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
