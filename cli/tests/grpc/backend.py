"""A gRPC backend that answers /test.Echo/Who with its own name: backend.py NAME PORT. It
prints "serving NAME PORT PID" once it listens, and on SIGTERM stops taking calls, lets the
calls in flight finish (up to 2 s) and exits 0, as a well-behaved gRPC server does."""
import os
import signal
import sys
from concurrent import futures

import grpc

name, port = sys.argv[1], int(sys.argv[2])


def who(request, context):
    return name.encode()


handler = grpc.method_handlers_generic_handler(
    "test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(who)}
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(f"127.0.0.1:{port}")
server.start()
signal.signal(signal.SIGTERM, lambda *_: server.stop(2))
print("serving", name, port, os.getpid(), flush=True)
server.wait_for_termination()
