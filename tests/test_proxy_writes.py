"""The proxy's write batch (proxy/writes.py) on real sockets and a real uvloop loop: what is
written in one pass of the loop reaches the peer after the pass, in order; closes and aborts
keep their place among the writes; a dead or broken connection holds back no other."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import uvloop

from podkit.proxy.config import ProxyConfig
from podkit.proxy.server import Proxy
from podkit.proxy.session import HttpSession
from podkit.proxy.writes import WriteBatch
from proxy_harness import EchoServer

DEADLINE = 5.0


class Quiet(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def connection() -> tuple[asyncio.Transport, socket.socket, Quiet]:
    """Our side as a uvloop transport, the peer as a plain non-blocking socket."""
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    transport, protocol = await asyncio.get_running_loop().create_connection(Quiet, sock=ours)
    return transport, peer, protocol


async def read_to_eof(peer: socket.socket) -> bytes:
    """Everything the peer receives until the connection ends (EOF or reset)."""
    loop = asyncio.get_running_loop()
    got = b""
    async with asyncio.timeout(DEADLINE):
        while True:
            try:
                chunk = await loop.sock_recv(peer, 65536)
            except ConnectionResetError:
                return got
            if not chunk:
                return got
            got += chunk


def nothing_yet(peer: socket.socket) -> bool:
    try:
        peer.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    return False


def run(test: Callable[[], Awaitable[None]]) -> None:
    uvloop.run(test())


def busy_batch() -> WriteBatch:
    """A batch of a proxy with several exchanges in flight: writes wait for the pass's end."""
    batch = WriteBatch()
    batch.busy = 3
    return batch


def test_with_one_exchange_in_flight_a_write_goes_out_at_once() -> None:
    async def test() -> None:
        batch = WriteBatch()
        batch.busy = 1
        transport, peer, _ = await connection()
        batch.write(transport, b"now")
        assert peer.recv(16) == b"now"  # no waiting for the pass to end: nothing to batch with
        batch.busy = 2
        batch.write(transport, b" later")
        assert nothing_yet(peer)
        batch.close(transport)
        assert await read_to_eof(peer) == b" later"

    run(test)


def test_writes_of_one_pass_go_out_after_it_in_order() -> None:
    async def test() -> None:
        batch = busy_batch()
        transport, peer, _ = await connection()
        for piece in (b"one ", b"two ", b"three"):
            batch.write(transport, piece)
        assert nothing_yet(peer), "a write went out before the loop's pass ended"
        batch.close(transport)
        assert await read_to_eof(peer) == b"one two three"

    run(test)


def test_close_and_abort_keep_their_place_and_later_writes_are_dropped() -> None:
    async def test() -> None:
        batch = busy_batch()
        closed, closed_peer, closed_proto = await connection()
        aborted, aborted_peer, aborted_proto = await connection()
        batch.write(closed, b"before close")
        batch.write(aborted, b"before abort")
        batch.close(closed)
        batch.abort(aborted)
        batch.write(closed, b" after close")
        batch.write(aborted, b" after abort")
        assert await read_to_eof(closed_peer) == b"before close"
        assert await read_to_eof(aborted_peer) == b"before abort"
        async with asyncio.timeout(DEADLINE):
            await closed_proto.lost
            await aborted_proto.lost

    run(test)


def test_a_half_close_comes_after_the_writes_and_leaves_the_connection_open() -> None:
    async def test() -> None:
        batch = busy_batch()
        transport, peer, _ = await connection()
        batch.write(transport, b"request")
        batch.write_eof(transport)
        assert await read_to_eof(peer) == b"request"
        assert not transport.is_closing()  # only our sending side is done (TCP half-close)
        transport.close()

    run(test)


def test_a_connection_gone_or_broken_meanwhile_holds_back_no_other() -> None:
    async def test() -> None:
        batch = busy_batch()
        gone, gone_peer, _ = await connection()
        broken, broken_peer, broken_proto = await connection()
        fine, fine_peer, _ = await connection()
        batch.write(gone, b"to a closed connection")
        batch.write(broken, "not bytes")  # type: ignore[arg-type]  # the transport raises
        batch.write(fine, b"still delivered")
        batch.close(fine)
        gone.abort()  # closed before the pass ends, as when the peer resets it
        assert await read_to_eof(fine_peer) == b"still delivered"
        assert await read_to_eof(gone_peer) == b""
        async with asyncio.timeout(DEADLINE):
            await broken_proto.lost  # the broken one is aborted, not left half-written
        assert await read_to_eof(broken_peer) == b""

    run(test)


def test_a_request_arriving_while_a_session_closes_is_not_sent_upstream() -> None:
    """Draining closes idle keep-alive connections; the close takes effect at the pass's end, so
    a request the client sent meanwhile can still be read in that pass. It must be dropped, as
    bytes after a close always were: not sent upstream with nobody left to answer."""
    backend = EchoServer()
    request = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"

    async def test() -> None:
        config = ProxyConfig.model_validate(
            {
                "listeners": [
                    {
                        "name": "main",
                        "listen": "127.0.0.1:0",
                        "routes": [{"match": {"prefix": "/"}, "cluster": "backend"}],
                    }
                ],
                "clusters": [{"name": "backend", "endpoints": [{"address": backend.address}]}],
            }
        )
        proxy = Proxy(config)
        listener, cluster = proxy.listeners[0], proxy.clusters["backend"]
        ours, peer = socket.socketpair()
        peer.setblocking(False)
        session = HttpSession(listener)
        await asyncio.get_running_loop().create_connection(lambda: session, sock=ours)
        # One exchange first: the head is known now and a pooled connection waits (the fast path).
        await asyncio.get_running_loop().sock_sendall(peer, request)
        async with asyncio.timeout(DEADLINE):
            while session.head is not None or not cluster.hosts[0].idle:
                await asyncio.sleep(0.01)
        assert cluster.active_requests == 0
        proxy.writes.busy = 3  # others in flight: the close waits for the pass's end
        session.close_if_idle()
        session.data_received(request)
        assert session.head is None and cluster.active_requests == 0
        assert len(cluster.hosts[0].idle) == 1  # the pooled connection was not taken
        answer = await read_to_eof(peer)
        assert answer.count(b"HTTP/1.1 200") == 1  # the first request's, and nothing after

    try:
        run(test)
    finally:
        backend.stop()
