#!/usr/bin/env python3
"""Kernel time of the two ways to dump TCP LISTEN sockets (BENCHMARKS 11,
fourth round): one inet_diag_req_v2 per family (AF_INET, then AF_INET6), as
portsight asked before, against one TCPDIAG_GETSOCK request, which the
kernel answers for both families in one walk of its listening hash.

    sudo unshare -n python3 bench/sock_diag_requests.py [LISTENERS] [DUMPS]

Run in a fresh network namespace (`unshare -n`): it listens on LISTENERS
ports (default 100) of 0.0.0.0 there, sends no traffic, and prints the
system and user CPU time per dump pair / compat dump, twice, alternating.
"""
import resource
import socket
import struct
import sys

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
TCPDIAG_GETSOCK = 18
NLM_F_REQUEST_DUMP = 0x301
NLMSG_ERROR, NLMSG_DONE = 2, 3
LISTEN = 1 << 10


def v2(seq, family):
    body = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, LISTEN) + bytes(48)
    return struct.pack("=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST_DUMP, seq, 0) + body


def compat(seq):
    body = struct.pack("=BBBB", socket.AF_INET, 0, 0, 0) + bytes(48) + struct.pack("=II", LISTEN, 0)
    return struct.pack("=IHHII", 16 + len(body), TCPDIAG_GETSOCK, NLM_F_REQUEST_DUMP, seq, 0) + body


def dump(sock, request):
    sock.send(request)
    rows = []
    while True:
        data = sock.recv(65536)
        off = 0
        while off < len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if kind == NLMSG_DONE:
                return rows
            if kind == NLMSG_ERROR:
                raise OSError(-struct.unpack_from("=i", data, off + 16)[0], "kernel replied")
            family, state = data[off + 16], data[off + 17]
            port = struct.unpack_from(">H", data, off + 20)[0]
            rows.append((family, state, port))
            off += (length + 3) & ~3


def main():
    listeners = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    dumps = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    held = []
    for _ in range(listeners):
        s = socket.socket()
        s.bind(("0.0.0.0", 0))
        s.listen(16)
        held.append(s)
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    sock.bind((0, 0))
    pair = sorted(dump(sock, v2(1, socket.AF_INET)) + dump(sock, v2(2, socket.AF_INET6)))
    one = sorted(dump(sock, compat(3)))
    assert pair == one, "the two ways disagree"
    print(f"{len(one)} listeners; both ways give the same rows; {dumps} dumps each")
    ways = [
        ("v2, one request per family", lambda i: (dump(sock, v2(i, socket.AF_INET)), dump(sock, v2(i, socket.AF_INET6)))),
        ("TCPDIAG_GETSOCK, one request", lambda i: dump(sock, compat(i))),
    ]
    for name, way in ways * 2:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        for i in range(dumps):
            way(i)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        sys_us = (r1.ru_stime - r0.ru_stime) / dumps * 1e6
        user_us = (r1.ru_utime - r0.ru_utime) / dumps * 1e6
        print(f"{name:32} system {sys_us:6.1f} µs, user {user_us:6.1f} µs per scan")


if __name__ == "__main__":
    main()
