"""Asks grpcio for services over xds:///, one wait-for-ready call each, and says when each is
answered. Service names come on stdin, one a line; for each it prints "asked SERVICE" once the
call is queued, then "served SERVICE" (or "failed SERVICE CODE") when it completes. A line
"direct HOST:PORT" makes the same call on a new channel straight to that address, no xDS."""
import sys
import threading

import grpc

lock = threading.Lock()


def say(*words):
    with lock:
        print(*words, flush=True)


calls = []
for line in sys.stdin:
    service = line.strip()
    if not service:
        continue
    if service.startswith("direct "):
        service = service.split()[1]
        channel = grpc.insecure_channel(f"ipv4:{service}")
    else:
        channel = grpc.insecure_channel(f"xds:///{service}")
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    # Queued until the channel has an endpoint: the answer comes from the first one it gets.
    future = check.future(b"", timeout=30, wait_for_ready=True)

    def done(f, service=service):
        try:
            f.result()
            say("served", service)
        except grpc.RpcError as e:
            say("failed", service, e.code())

    future.add_done_callback(done)
    calls.append((channel, future))
    say("asked", service)
