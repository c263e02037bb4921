"""The gRPC proxy in front of TFF's worker: the one port fedlab-worker exposes.

Every method of TFF 0.87's executor service (`tensorflow_federated.v0.ExecutorGroup`: GetExecutor, CreateValue,
CreateCall, CreateStruct, CreateSelection, Compute, Dispose, DisposeExecutor) is unary-unary, so the proxy
forwards each request as raw bytes, unparsed, and returns the answer (or the error's code and details) as it came.
It adds what the binary lacks: an address of our choice and, with credentials, mutual TLS.
"""

from concurrent import futures

import grpc

SERVICE = '/tensorflow_federated.v0.ExecutorGroup/'
# As TFF's local context and fedlab's remote context: values cross gRPC in single messages of up to 2 GB.
GRPC_OPTIONS = [
    ('grpc.max_message_length', 2_000_000_000),
    ('grpc.max_receive_message_length', 2_000_000_000),
    ('grpc.max_send_message_length', 2_000_000_000),
]
_THREADS = 32  # calls served at once (several runs may share a worker; a Compute holds its thread)


class _Forward(grpc.GenericRpcHandler):
    """Forwards every unary-unary method of TFF's executor service to `upstream`; others are UNIMPLEMENTED."""

    def __init__(self, upstream: grpc.Channel):
        self._upstream = upstream
        self._handlers = {}

    def service(self, handler_call_details):
        method = handler_call_details.method
        if not method.startswith(SERVICE):
            return None
        if method not in self._handlers:
            self._handlers[method] = grpc.unary_unary_rpc_method_handler(self._forwarder(method))
        return self._handlers[method]

    def _forwarder(self, method: str):
        call = self._upstream.unary_unary(method)  # no (de)serializers: bytes in, bytes out

        def forward(request: bytes, context: grpc.ServicerContext) -> bytes:
            # No deadline (TFF's stub sets none); a client that goes away cancels the call it made.
            answer = call.future(request)
            context.add_callback(answer.cancel)
            try:
                return answer.result()
            except grpc.RpcError as error:
                context.abort(error.code(), error.details() or '')

        return forward


def start(upstream: grpc.Channel, address: str, credentials: grpc.ServerCredentials | None) -> grpc.Server:
    """A started server on `address` forwarding to `upstream`: mutual TLS with `credentials`, else plain."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=_THREADS), handlers=[_Forward(upstream)],
                         options=GRPC_OPTIONS)
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if not bound:
        raise SystemExit(f'fedlab-worker: error: cannot listen on {address}')
    server.start()
    return server
