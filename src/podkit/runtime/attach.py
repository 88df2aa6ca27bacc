"""A container's stdin and terminal for `kubectl attach` (and `kubectl run -it`), kept by its
pod's supervisor as containerd's shim keeps them.

A container with `stdin: true` reads a pipe whose other end the supervisor holds; with
`tty: true` its stdin, stdout and stderr are a pseudo-terminal whose master the supervisor
reads (into the container's log, and to whoever is attached). Each container instance gets a
new pipe or terminal; with `stdinOnce` its stdin is closed when the first attach session ends.

Clients (serve's attach handler, api/exec_ws.py) connect to a unix socket in the container's
state directory and speak frames: one type byte, a 4-byte big-endian length, the payload.
Types are the attach channels' numbers: 0 stdin and 4 a resize (JSON {"Width", "Height"}) from
the client (an empty stdin frame first says the session attaches stdin), 255 its stdin
closed; 1 stdout and 2 stderr to it, and 3 an error message before
the server closes (no container running). The connection ends when the container instance does.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import struct
import termios
from pathlib import Path

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
SOCKET = "attach.sock"
_HEADER = struct.Struct(">BI")


def frame(kind: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    """The next frame, or None at the end of the stream."""
    try:
        kind, size = _HEADER.unpack(await reader.readexactly(_HEADER.size))
        return kind, await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        return None


def socket_path(directory: Path) -> tuple[int, str]:
    """A short path to `directory`'s attach socket (an open fd of it, and /proc/self/fd/N/..):
    a pod's state directory is often longer than a unix socket path may be (108 bytes).
    Close the fd once bound or connected."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    return fd, f"/proc/self/fd/{fd}/{SOCKET}"


def set_size(master: int, payload: bytes) -> None:
    """A resize frame's {"Width", "Height"} on the terminal."""
    with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
        size = json.loads(payload)
        winsize = struct.pack("HHHH", int(size["Height"]), int(size["Width"]), 0, 0)
        fcntl.ioctl(master, termios.TIOCSWINSZ, winsize)


class Instance:
    """One container instance's stdin (and terminal): made before its launch."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        if tty:
            self.master, self._child_end = os.openpty()
        else:
            self._child_end, self.master = os.pipe()  # master: the write end, ours
        os.set_blocking(self.master, False)
        self.clients: set[asyncio.StreamWriter] = set()
        self.stdin_open = True
        self.alive = True  # until the instance exits
        self._pending = bytearray()  # stdin the pipe has not taken yet
        self._close_when_flushed = False  # stdinOnce ended while some was still pending

    def child_path(self) -> str:
        """The path the launcher opens as the container's stdin (and terminal)."""
        return f"/proc/{os.getpid()}/fd/{self._child_end}"

    def launched(self) -> None:
        """The launcher has its end now (or failed): ours goes, so EOF and EIO mean the
        container's side is gone."""
        if self._child_end >= 0:
            os.close(self._child_end)
            self._child_end = -1

    def write_stdin(self, data: bytes) -> None:
        """Into the container's stdin; what the pipe cannot take now waits its turn (a
        paste, a file piped to `kubectl attach -i`), none of it dropped."""
        if not self.stdin_open or self.master < 0:
            return
        waiting = bool(self._pending)
        self._pending += data
        if not waiting:
            self._flush()

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                done = os.write(self.master, self._pending)
                del self._pending[:done]
        except BlockingIOError:
            loop.add_writer(self.master, self._flush)
            return
        except OSError:  # the container's side is gone
            self._pending.clear()
        loop.remove_writer(self.master)
        if self._close_when_flushed:
            self._close_when_flushed = False
            self._shut()

    def close_stdin(self) -> None:
        """stdinOnce's end of the first session: the container reads EOF (for a terminal,
        an end-of-file character, as a user's Ctrl-D)."""
        if not self.stdin_open:
            return
        self.stdin_open = False
        if self._pending:  # what came before the end goes in first
            self._close_when_flushed = True
            return
        self._shut()

    def _shut(self) -> None:
        if self.tty:
            with contextlib.suppress(OSError):
                os.write(self.master, b"\x04")
        else:
            os.close(self.master)
            self.master = -1

    def output(self, stream: str, data: bytes) -> None:
        """A copy of the container's output (logs.Tee) for the attached clients."""
        self.send(STDERR if stream == "stderr" else STDOUT, data)

    def send(self, kind: int, data: bytes) -> None:
        for writer in list(self.clients):
            if writer.is_closing():
                self.clients.discard(writer)
            else:
                writer.write(frame(kind, data))

    def end(self) -> None:
        """The instance exited: its clients' sessions end, its descriptors close."""
        self.alive = False
        self.launched()
        for writer in self.clients:
            writer.close()
        self.clients.clear()
        if self.master >= 0:
            self._drop_pending()
            os.close(self.master)
            self.master = -1

    def _drop_pending(self) -> None:
        if self._pending and self.master >= 0:
            asyncio.get_running_loop().remove_writer(self.master)
        self._pending.clear()


class AttachPoint:
    """A container's attach socket, for every instance of it in turn."""

    def __init__(self, directory: Path, tty: bool, stdin_once: bool) -> None:
        self.directory, self.tty, self.stdin_once = directory, tty, stdin_once
        self.current: Instance | None = None
        self.sessions = 0  # attach sessions with stdin that have ended
        self._server: asyncio.Server | None = None

    async def listen(self) -> None:
        if self._server is not None:
            return
        (self.directory / SOCKET).unlink(missing_ok=True)
        fd, path = socket_path(self.directory)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=path)
        finally:
            os.close(fd)
        os.chmod(self.directory / SOCKET, 0o600)  # the container's keyboard: root's alone

    def new_instance(self) -> Instance:
        if self.current is not None:
            self.current.end()
        self.current = Instance(self.tty)
        if self.stdin_once and self.sessions:
            self.current.close_stdin()  # its one session is over: no stdin for a restart
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.end()
            self.current = None
        if self._server is not None:
            self._server.close()
            self._server = None
        (self.directory / SOCKET).unlink(missing_ok=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        instance = self.current
        if instance is None or not instance.alive:
            writer.write(frame(ERROR, b"the container is not running"))
            writer.close()
            return
        instance.clients.add(writer)
        used_stdin = False
        try:
            while (got := await read_frame(reader)) is not None:
                kind, payload = got
                if kind == STDIN:
                    used_stdin = True
                    instance.write_stdin(payload)
                elif kind == RESIZE and instance.tty and instance.master >= 0:
                    set_size(instance.master, payload)
                elif kind == CLOSE and self.stdin_once:  # the client's stdin ended: so does its
                    instance.close_stdin()
        except ConnectionError:
            pass
        finally:
            instance.clients.discard(writer)
            writer.close()
            if used_stdin and instance is self.current:
                self.sessions += 1
                if self.stdin_once:
                    instance.close_stdin()
