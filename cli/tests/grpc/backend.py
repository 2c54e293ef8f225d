"""A gRPC backend that answers /test.Echo/Who with its own name: backend.py NAME PORT"""
import sys, grpc
from concurrent import futures
name, port = sys.argv[1], int(sys.argv[2])
def who(request, context):
    return name.encode()
handler = grpc.method_handlers_generic_handler("test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(who)})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(f"127.0.0.1:{port}")
server.start()
print("serving", name, port, flush=True)
server.wait_for_termination()
