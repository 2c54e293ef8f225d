"""Calls xds:///SERVICE at RATE calls a second through grpcio until its stdin closes, and then
prints one JSON line: {"served": {backend: calls}, "failed": calls, "errors": [the first
few], "p50_ms": .., "p99_ms": ..} (how long served calls took): steady.py SERVICE RATE. Calls are made without waiting for each other, so a slow one
does not slow the rate; "ready" is printed once the first call was served."""
import json
import sys
import threading
import time

import grpc

service, rate = sys.argv[1], float(sys.argv[2])
channel = grpc.insecure_channel(f"xds:///{service}")
call = channel.unary_unary("/test.Echo/Who")
call(b"", timeout=10, wait_for_ready=True)
print("ready", flush=True)

stop = threading.Event()


def wait_for_eof():
    sys.stdin.read()
    stop.set()


threading.Thread(target=wait_for_eof, daemon=True).start()
lock = threading.Lock()
served, errors, took = {}, [], []
failed = 0
pending = []


def done(future, began):
    global failed
    with lock:
        try:
            who = future.result().decode()
            took.append(time.monotonic() - began)
            served[who] = served.get(who, 0) + 1
        except grpc.RpcError as e:
            failed += 1
            if len(errors) < 5:
                errors.append(f"{e.code()}: {e.details()}")


start = time.monotonic()
n = 0
while not stop.is_set():
    due = start + n / rate
    time.sleep(max(0.0, due - time.monotonic()))
    began = time.monotonic()
    future = call.future(b"", timeout=2)
    future.add_done_callback(lambda f, began=began: done(f, began))
    pending.append(future)
    n += 1
for future in pending:
    try:
        future.result()
    except grpc.RpcError:
        pass
time.sleep(0.1)
with lock:
    took.sort()
    p50 = took[len(took) // 2] * 1000 if took else 0
    p99 = took[min(len(took) - 1, len(took) * 99 // 100)] * 1000 if took else 0
    report = {"served": served, "failed": failed, "errors": errors, "p50_ms": p50, "p99_ms": p99}
    print(json.dumps(report), flush=True)
