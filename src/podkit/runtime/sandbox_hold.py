"""What a pod sandbox becomes once its namespaces are made (runtime/sandbox.py execs it):
`python -S -E sandbox_hold.py sockets FD` or `... reap`.

The sandbox is forked from podkit with podkit's whole heap; staying that fork would cost each
pod every page podkit writes afterwards (about 7 MB here). A fresh interpreter that imports
only built-in modules costs about 3 MB. It is run by path, so no package is imported, and uses
the C modules (_socket, _signal, posix) directly: their Python wrappers import enum and more.

- sockets FD: make sockets inside the pod for podkit (published ports, probes). podkit asks
  with an address family on the control socket FD and gets the socket back over SCM_RIGHTS;
  sockets keep the namespace they were made in, and this needs no privilege over the pod's
  namespaces (rootless too). Exits when podkit closes its end.
- reap: PID 1 of a pod-wide PID namespace (shareProcessNamespace): it only reaps orphans.
"""

import _signal  # type: ignore[import-not-found]  # (no stubs; signal.py costs 0.9 MB)
import _socket
import posix
import sys


def _name(name: str) -> None:
    with open("/proc/self/comm", "w") as f:  # what ps shows; exec named it after python
        f.write(name)


def serve_sockets(fd: int) -> None:
    control = _socket.socket(fileno=fd)
    while True:
        request = control.recv(8)
        if not request:  # podkit closed its end: it is gone
            posix._exit(0)
        made = _socket.socket(int(request), _socket.SOCK_STREAM)
        passed = made.fileno().to_bytes(4, sys.byteorder)
        control.sendmsg([b"s"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, passed)])
        made.close()


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
        serve_sockets(int(sys.argv[2]))
    else:
        _name("pause")  # PID 1 as `ps` shows it in a Kubernetes pod
        reap()
