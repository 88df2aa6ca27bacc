"""Where a TCP socket is connected, as the program sees it (getpeername) and as the kernel
holds it (/proc/net/tcp): under DNAT both say the cluster IP; under the socket load balancer
the kernel's says the endpoint. Standard library only: it also runs inside pods, as

    python3 socket_peers.py HOST PORT PATH

which makes one HTTP request and prints [body, peer, kernel] as JSON."""

from __future__ import annotations

import json
import os
import socket
import struct
import sys


def kernel_peer(sock: socket.socket) -> tuple[str, int]:
    """The remote address of the kernel's connection for this socket (by its inode: a local
    port may be shared by connections to different places)."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[9] == inode:
                return _address(fields[2])
    raise LookupError(f"no socket with inode {inode} in /proc/net/tcp")


def _address(field: str) -> tuple[str, int]:
    """/proc/net/tcp's "0100007F:1F90": the address as the kernel's u32, printed in hex."""
    ip, port = field.split(":")
    return socket.inet_ntoa(struct.pack("=I", int(ip, 16))), int(port, 16)


Address = tuple[str, int]


def request(host: str, port: int, path: str) -> tuple[str, Address, Address]:
    """One HTTP/1.0 GET: (the body, the peer as getpeername says, as the kernel holds it)."""
    with socket.create_connection((host, port), timeout=5) as s:
        peer, kernel = s.getpeername(), kernel_peer(s)
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).partition(b"\r\n\r\n")[2].decode(), peer, kernel


if __name__ == "__main__":
    print(json.dumps(request(sys.argv[1], int(sys.argv[2]), sys.argv[3])))
