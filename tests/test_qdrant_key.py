"""The Qdrant API key reaches a server over gRPC (the default transport) as the real secret."""

from __future__ import annotations

import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from config import Settings
from embed.descriptors import specs
from store.factory import open_index
from store.index import IndexUnavailable
from tests.conftest import free_port, make_settings


class _Recorder(grpc.GenericRpcHandler):
    """Answers every method UNAVAILABLE after noting the metadata it was called with."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler:
        with self.lock:
            self.seen.append(dict(handler_call_details.invocation_metadata))

        def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
            context.abort(grpc.StatusCode.UNAVAILABLE, "test server")
            return b""

        return grpc.unary_unary_rpc_method_handler(refuse)


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_the_api_key_goes_to_a_grpc_server_unmasked(tmp_path: Path) -> None:
    recorder = _Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[recorder])
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    settings: Settings = make_settings(
        tmp_path / "data",
        qdrant={
            "url": "http://127.0.0.1:9",  # REST would go here; gRPC goes to grpc_port
            "prefer_grpc": True,
            "grpc_port": port,
            "api_key": "s3cret-key",
            "timeout_s": 3,
        },
    )
    try:
        index = open_index(settings, specs(settings))
        with pytest.raises(IndexUnavailable):
            index.ensure_collection()
        index.close()
    finally:
        server.stop(grace=None)
    keys = {call.get("api-key") for call in recorder.seen}
    assert recorder.seen, "the index never called the server"
    assert keys == {"s3cret-key"}
