"""What a pod sandbox becomes once its namespaces are made (runtime/sandbox.py execs it):
`python -S -E sandbox_hold.py sockets FD [LISTEN_FD]` or `... reap`.

The sandbox is forked from podkit with podkit's whole heap; staying that fork would cost each
pod every page podkit writes afterwards (about 7 MB here). A fresh interpreter that imports
only built-in modules costs about 3 MB. It is run by path, so no package is imported, and uses
the C modules (_socket, _signal, posix) directly: their Python wrappers import enum and more.

- sockets FD [LISTEN_FD]: make sockets inside the pod for podkit (published ports, probes).
  podkit asks with `FAMILY [TYPE]` on the control socket FD and gets the socket back over
  SCM_RIGHTS; sockets keep the namespace they were made in, and this needs no privilege over
  the pod's namespaces (rootless). LISTEN_FD, a unix socket in the pod's directory that only
  its user may open, takes the same requests from podkit serve (its Service proxy: the pod's
  side of Services without root). Exits when podkit closes the control socket.
- reap: PID 1 of a pod-wide PID namespace (shareProcessNamespace): it only reaps orphans.
"""

import _signal  # type: ignore[import-not-found]  # (no stubs; signal.py costs 0.9 MB)
import _socket
import posix
import select
import sys


def _name(name: str) -> None:
    with open("/proc/self/comm", "w") as f:  # what ps shows; exec named it after python
        f.write(name)


def _answer(asker: _socket.socket) -> bool:
    """One request on `asker`; False once it has closed its end."""
    request = asker.recv(32).split()
    if not request:
        return False
    kind = int(request[1]) if len(request) > 1 else _socket.SOCK_STREAM
    try:
        made = _socket.socket(int(request[0]), kind)
    except (OSError, ValueError):  # nothing passed: the asker sees no socket
        asker.sendall(b"e")
        return True
    passed = made.fileno().to_bytes(4, sys.byteorder)
    asker.sendmsg([b"s"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, passed)])
    made.close()
    return True


def serve_sockets(fd: int, listen_fd: int = -1) -> None:
    control = _socket.socket(fileno=fd)
    listener = _socket.socket(fileno=listen_fd) if listen_fd >= 0 else None
    askers = [control]
    while True:
        ready = select.select(askers + ([listener] if listener else []), [], [])[0]
        for s in ready:
            if s is listener:
                conn, _ = listener._accept()  # type: ignore[attr-defined]
                askers.append(_socket.socket(fileno=conn))
                continue
            try:
                more = _answer(s)
            except OSError:
                more = False
            if more:
                continue
            if s is control:  # podkit closed its end: it is gone
                posix._exit(0)
            askers.remove(s)
            s.close()


def reap() -> None:
    _signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGCHLD})  # (held since before exec)
    while True:
        try:
            while posix.waitpid(-1, posix.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        _signal.sigwaitinfo({_signal.SIGCHLD})


if __name__ == "__main__":
    if sys.argv[1] == "sockets":
        _name("podkit-sandbox")
        serve_sockets(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else -1)
    else:
        _name("pause")  # PID 1 as `ps` shows it in a Kubernetes pod
        reap()
