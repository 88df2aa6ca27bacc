"""Bytes both ways between two TCP streams, each way closed on its own (a half-close passes
on), for the proxies of `podkit serve`: NodePorts and rootless Services."""

from __future__ import annotations

import asyncio
import contextlib


async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()  # the other way may still carry data


async def both_ways(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Until both ways have ended; then both are closed."""
    await asyncio.gather(copy(a[0], b[1]), copy(b[0], a[1]))
    for _, writer in (a, b):
        writer.close()
