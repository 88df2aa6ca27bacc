"""The proxy engine's own Python cost per request, without sockets.

One HttpSession and one pooled UpstreamConnection with stand-in transports (they only collect
what is written: no socket can be this quiet), fed the request wrk sends and the response nginx
gives, in a loop. What this measures is the Python of the common case (a cached request head,
an idle pooled connection, a one-read Content-Length response, the write batch made every 25
exchanges as the loop's pass would) and nothing of uvloop or the kernel: the part of
bench/proxy.py's CPU per request that the engine's code decides. It prints the best of REPS runs
of N exchanges (defaults 30 and 20,000), then one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from podkit.proxy.clock import Clock
from podkit.proxy.cluster import ClusterRuntime
from podkit.proxy.config import ProxyConfig
from podkit.proxy.listener import ListenerRuntime
from podkit.proxy.session import HttpSession
from podkit.proxy.upstream import UpstreamConnection
from podkit.proxy.writes import WriteBatch

CONFIG = {
    "listeners": [
        {
            "name": "http",
            "listen": "127.0.0.1:8080",
            "routes": [{"match": {"prefix": "/"}, "cluster": "backend"}],
        }
    ],
    "clusters": [{"name": "backend", "endpoints": [{"address": "127.0.0.1:8081"}]}],
}
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 05:40:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 17\r\nConnection: keep-alive\r\n\r\n"
    b"hello from nginx\n"
)


class Collecting:
    """A stand-in transport: keeps what is written; closing would mean the exchange failed."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        raise SystemExit("the proxy closed a connection: the exchange failed")

    abort = close


PASS = 25
CONNECTIONS = 50


async def main() -> None:
    n = int(os.environ.get("N", "20000")) // PASS * PASS
    reps = int(os.environ.get("REPS", "30"))
    config = ProxyConfig.model_validate(CONFIG)
    clock = Clock()
    writes = WriteBatch()
    writes.busy = CONNECTIONS  # as under bench/proxy.py's load: writes wait for the pass's end
    clusters = {c.name: ClusterRuntime(c, clock, writes) for c in config.clusters}
    listener = ListenerRuntime(config.listeners[0], clusters, None, writes)
    cluster = clusters["backend"]
    host = cluster.hosts[0]
    conn = UpstreamConnection(cluster, host)
    upstream = Collecting()
    conn.connection_made(upstream)  # type: ignore[arg-type]
    cluster.pool(conn, None, fresh=True)
    conn.idle_deadline = float("inf")
    cluster.connections = 1
    session = HttpSession(listener)
    client = Collecting()
    session.connection_made(client)  # type: ignore[arg-type]

    def exchange() -> None:
        session.data_received(REQUEST)
        conn.data_received(RESPONSE)

    def run(exchanges: int) -> None:
        # The loop's passes: a poll returns about 25 ready connections under bench/proxy.py's
        # load (perf: 0.04 epoll_pwait calls a request); the batch is written after each pass.
        for _ in range(exchanges // PASS):
            for _ in range(PASS):
                exchange()
            writes.flush()

    run(1000)
    if not client.written[-1].endswith(b"hello from nginx\n") or list(host.idle) != [conn]:
        raise SystemExit("the exchange did not go through the fast path")
    best = float("inf")
    for _ in range(reps):
        client.written.clear()
        upstream.written.clear()
        started = time.perf_counter()
        run(n)
        best = min(best, (time.perf_counter() - started) / n)
    print(f"{best * 1e6:.2f} us of Python per request (best of {reps} x {n})", file=sys.stderr)
    print(json.dumps({"python_us_per_request": round(best * 1e6, 2)}))


if __name__ == "__main__":
    asyncio.run(main())
