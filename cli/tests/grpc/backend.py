"""A gRPC backend that answers /test.Echo/Who with its own name:
backend.py NAME PORT [--delay-ms N] [--abrupt]. It prints "serving NAME PORT PID" once it
listens. On SIGTERM it stops taking calls, lets the calls in flight finish (up to 2 s) and
exits 0, as a well-behaved gRPC server does; with --abrupt it exits at once, cutting the calls
in flight, as a service that knows nothing of draining does. --delay-ms makes each call take
that long."""
import os
import signal
import sys
import time
from concurrent import futures

import grpc

name, port = sys.argv[1], int(sys.argv[2])
delay = int(sys.argv[sys.argv.index("--delay-ms") + 1]) / 1000 if "--delay-ms" in sys.argv else 0
abrupt = "--abrupt" in sys.argv


def who(request, context):
    if delay:
        time.sleep(delay)
    return name.encode()


handler = grpc.method_handlers_generic_handler(
    "test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(who)}
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(f"127.0.0.1:{port}")
server.start()
if abrupt:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
else:
    signal.signal(signal.SIGTERM, lambda *_: server.stop(2))
print("serving", name, port, os.getpid(), flush=True)
server.wait_for_termination()
