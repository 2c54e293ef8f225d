"""Calls xds:///SERVICE for SECONDS at RATE calls a second through grpcio, and prints, as one
JSON line, each call's start (milliseconds since the first) and the backend that served it
(null when it failed): timeline.py SERVICE SECONDS RATE"""
import json
import sys
import time

import grpc

service, seconds, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
channel = grpc.insecure_channel(f"xds:///{service}")
call = channel.unary_unary("/test.Echo/Who")
# The first call waits for the channel: the timeline starts once it is served.
call(b"", timeout=10, wait_for_ready=True)
print("ready", flush=True)
start = time.monotonic()
calls = []
n = 0
while time.monotonic() - start < seconds:
    due = start + n / rate
    time.sleep(max(0.0, due - time.monotonic()))
    at = int((time.monotonic() - start) * 1000)
    try:
        calls.append([at, call(b"", timeout=2).decode()])
    except grpc.RpcError as e:
        calls.append([at, None])
        print("call failed:", e.code(), e.details(), file=sys.stderr)
    n += 1
print(json.dumps(calls), flush=True)
