"""Sends N watch creates for the prefix flood/ at once on one Watch stream, one gRPC message (and
so one small HTTP/2 DATA frame) each, as grpc-core clients do, and reads the responses.

Prints "CREATED <n>" once every watch is created, then "EVENTS <n>" once every watcher has had
the event of one put (made by the caller after CREATED), or "FAILED after <n> <code> <details>".
Used by etcd-compat-tests/tests/watch_flood.rs; needs the PyPI package grpcio.
"""
import sys
import threading

import grpc


def fields(buf):
    """Top-level (field number, wire type, value) of a protobuf message."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, i = varint(buf, i)
        elif wire == 2:
            n, i = varint(buf, i)
            val, i = buf[i:i + n], i + n
        elif wire == 1:
            val, i = buf[i:i + 8], i + 8
        elif wire == 5:
            val, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wire)
        yield num, wire, val


def varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def main():
    url, n = sys.argv[1], int(sys.argv[2])
    # WatchRequest{create_request: {key: "flood/", range_end: "flood0"}}
    create = bytes([0x0A, 0x10, 0x0A, 0x06]) + b"flood/" + bytes([0x12, 0x06]) + b"flood0"
    channel = grpc.insecure_channel(url)
    call = channel.stream_stream(
        "/etcdserverpb.Watch/Watch",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    done = threading.Event()

    def requests():
        for _ in range(n):
            yield create
        done.wait()

    created = events = 0
    try:
        for resp in call(requests()):
            for num, _, val in fields(resp):
                if num == 3 and val:  # created
                    created += 1
                    if created == n:
                        print("CREATED", created, flush=True)
                if num == 11:  # events
                    events += 1
            if events >= n:
                print("EVENTS", events, flush=True)
                break
    except grpc.RpcError as e:
        print("FAILED after", created, e.code(), e.details(), flush=True)
    done.set()


main()
