"""Calls TARGET (host:port, no xDS: a proxy such as Envoy) N times through grpcio and prints,
as one JSON line, how many calls each backend served and how many failed: direct.py TARGET N"""
import collections
import json
import sys

import grpc

target, n = sys.argv[1], int(sys.argv[2])
call = grpc.insecure_channel(target).unary_unary("/test.Echo/Who")
counts = collections.Counter()
failed = 0
for _ in range(n):
    try:
        counts[call(b"", timeout=5, wait_for_ready=True).decode()] += 1
    except grpc.RpcError as e:
        failed += 1
        print("call failed:", e.code(), e.details(), file=sys.stderr)
print(json.dumps({"served": counts, "failed": failed}), flush=True)
