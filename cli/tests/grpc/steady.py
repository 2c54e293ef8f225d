"""Calls xds:///SERVICE at RATE calls a second through grpcio until its stdin closes, and then
prints one JSON line: {"served": {backend: calls}, "failed": calls, "errors": [the first
few]}: steady.py SERVICE RATE. Calls are made without waiting for each other, so a slow one
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
served, errors = {}, []
failed = 0
pending = []


def done(future):
    global failed
    with lock:
        try:
            who = future.result().decode()
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
    future = call.future(b"", timeout=2)
    future.add_done_callback(done)
    pending.append(future)
    n += 1
for future in pending:
    try:
        future.result()
    except grpc.RpcError:
        pass
time.sleep(0.1)
with lock:
    print(json.dumps({"served": served, "failed": failed, "errors": errors}), flush=True)
