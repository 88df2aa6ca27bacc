"""The pod sandbox: a tiny process that holds the pod's namespaces (the kubelet's "pause").

podkit forks it while still single-threaded (no interpreter start-up on the pod's critical
path). It creates the pod's network (loopback up), UTS (hostname), IPC and mount namespaces,
sets the pod's sysctls, mounts pod-wide tmpfs volumes (emptyDir medium: Memory, /dev/shm,
secrets) inside its own mount namespace so they never appear on the host, reports `ready`,
and execs what holds them (a fork of podkit would cost the pod every page podkit writes
later): as root, `sleep infinity` (about 0.2 MB), since podkit makes the pod's sockets itself
by stepping into its network namespace (NetnsSockets); rootless, where podkit cannot enter
it, a small interpreter that makes them on request (sandbox_hold.py, about 3 MB).
Containers join its namespaces through /proc/<pid>/ns/*. It dies with podkit (PDEATHSIG),
and its namespaces with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from podkit.common import subids
from podkit.runtime import linux

_HOLD = [sys.executable, "-S", "-E", os.path.join(os.path.dirname(__file__), "sandbox_hold.py")]
_SLEEP_LINK = Path("/run/podkit/podkit-sandbox")  # sleep under the name ps shows
LISTEN_NAME = "sandbox.sock"  # in the pod's directory: its sockets for podkit serve


def _sleep() -> str | None:
    """As root, `sleep` linked as podkit-sandbox (exec names a process after the path); None
    rootless or without sleep."""
    sleep = shutil.which("sleep")
    if os.geteuid() != 0 or sleep is None:
        return None
    with contextlib.suppress(OSError):
        if os.readlink(_SLEEP_LINK) == sleep:
            return str(_SLEEP_LINK)
    _SLEEP_LINK.parent.mkdir(parents=True, exist_ok=True)
    new = _SLEEP_LINK.with_name(f".podkit-sandbox.{os.getpid()}")
    new.unlink(missing_ok=True)
    new.symlink_to(sleep)
    new.replace(_SLEEP_LINK)  # atomic: a sandbox starting meanwhile finds one or the other
    return str(_SLEEP_LINK)


def _enter_user_namespace(uid: int, gid: int, control: socket.socket | None) -> None:
    """Rootless: a user namespace where this user is root, so it may make the others. With
    subordinate ids (`control` given), podkit maps it with newuidmap/newgidmap, which only it
    can run on this process; otherwise the namespace maps this user alone."""
    linux.unshare(linux.CLONE_NEWUSER)
    if control is not None:
        control.sendall(b"u")
        if control.recv(1) != b"m":
            raise OSError("podkit could not map the pod's user namespace")
        return
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")  # required before an unprivileged gid_map
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def _setup(
    hostname: str,
    tmpfs: list[tuple[str, int | None]],
    sysctls: list[tuple[str, str]],
    mapped: socket.socket | None,
) -> None:
    if os.geteuid() != 0:
        _enter_user_namespace(os.geteuid(), os.getegid(), mapped)
    linux.unshare(linux.CLONE_NEWNET | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWNS)
    # The pod's sysctls: /proc/sys/net and the IPC ones are those of the namespaces of whoever
    # opens them, so written from here they are the pod's (the kubelet has the runtime do it).
    for path, value in sysctls:
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as exc:
            name = path.removeprefix("/proc/sys/").replace("/", ".")
            raise OSError(exc.errno, f"sysctl {name}: {exc.strerror}") from None
    # Mounts made from here on stay in the pod; the host never sees them.
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    linux.sethostname(hostname)
    linux.loopback_up()
    for path, size in tmpfs:
        os.makedirs(path, exist_ok=True)
        options = f"mode=1777,size={size}" if size else "mode=1777"
        linux.mount("tmpfs", path, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, options)


def _pid_namespace_init() -> int:
    """Fork PID 1 of a pod-wide PID namespace (shareProcessNamespace): it only reaps orphans."""
    linux.unshare(linux.CLONE_NEWPID)
    pid = os.fork()
    if pid:
        return pid
    os.closerange(3, 1 << 16)  # above all the report pipe: podkit reads it until EOF
    # Its parent (the sandbox) is outside the namespace, so getppid() is 0 here: no race check.
    linux.set_parent_death_signal(signal.SIGKILL)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})  # none is missed before exec
    os.execv(_HOLD[0], [*_HOLD, "reap"])


def _child(
    hostname: str,
    tmpfs: list[tuple[str, int | None]],
    sysctls: list[tuple[str, str]],
    share_pid: bool,
    parent: int,
    report: int,
    control: socket.socket,
    mapped: bool,
    sleep: str | None,
    listener: socket.socket | None,
) -> None:
    """The sandbox process itself; never returns."""
    try:
        linux.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != parent:  # podkit died before prctl took effect
            os._exit(1)
        linux.set_name("podkit-sandbox")  # until the exec below
        os.setsid()  # the terminal's Ctrl-C is podkit's to handle, not the sandbox's
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())  # podkit may hold some back
        _setup(hostname, tmpfs, sysctls, control if mapped else None)
        pid_ns = _pid_namespace_init() if share_pid else 0
        os.write(report, f"ready {pid_ns}".encode())
        if sleep is not None:  # podkit makes the pod's sockets itself: nothing else to do
            os.closerange(3, 1 << 16)
            os.execv(sleep, [sleep, "infinity"])
        # podkit's sockets and files are none of the sandbox's; only its control socket (and
        # the listener for serve) stay.
        keep = sorted(s.fileno() for s in (control, listener) if s is not None)
        for low, high in zip([2, *keep], [*keep, 1 << 16], strict=True):
            os.closerange(low + 1, high)
        for fd in keep:
            os.set_inheritable(fd, True)
        extra = [str(listener.fileno())] if listener is not None else []
        os.execv(_HOLD[0], [*_HOLD, "sockets", str(control.fileno()), *extra])
    except BaseException as exc:  # noqa: BLE001 - report anything, then vanish
        with contextlib.suppress(OSError):  # closed already if the exec failed
            os.write(report, f"error {exc}".encode())
    os._exit(1)


class NetnsSockets:
    """As root: sockets made in the pod's network namespace by stepping this thread into it
    and back (setns is per thread; a socket keeps the namespace it was made in), as CNI
    plugins do. The namespace is opened through the sandbox each time, not held: it goes
    when the sandbox goes (the sandbox is podkit's child, so its pid is not reused before
    podkit reaps it)."""

    def __init__(self, sandbox_pid: int) -> None:
        self._path = f"/proc/{sandbox_pid}/ns/net"

    def __call__(
        self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
    ) -> socket.socket:
        try:
            pod = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise OSError("the pod sandbox is gone") from None
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            linux.setns(pod, linux.CLONE_NEWNET)
            try:
                return socket.socket(family, kind)
            finally:
                linux.setns(home, linux.CLONE_NEWNET)
        finally:
            os.close(home)
            os.close(pod)

    def close(self) -> None:
        pass  # nothing held


class PodSockets:
    """Rootless: podkit's end of a sandbox's control socket (sandbox_hold.py)."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control

    def __call__(
        self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
    ) -> socket.socket:
        self.control.sendall(f"{int(family)} {int(kind)}".encode())
        reply, fds, _, _ = socket.recv_fds(self.control, 1, 1)
        if not fds:
            raise OSError("the pod sandbox is gone" if not reply else "no such socket")
        return socket.socket(fileno=fds[0])

    def close(self) -> None:
        self.control.close()


def _at(path: Path, use: Callable[[str], None]) -> None:
    """bind or connect a unix socket at `path`, through its directory's fd: a pod directory's
    path can be longer than a socket address holds (108 bytes)."""
    where = os.open(path.parent, os.O_PATH | os.O_CLOEXEC)
    try:
        use(f"/proc/self/fd/{where}/{path.name}")
    finally:
        os.close(where)


def pod_sockets(path: Path) -> PodSockets:
    """Sockets inside a rootless pod, from its sandbox's listener at `path` (fork_sandbox's
    `listen`). Raises OSError."""
    asker = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _at(path, asker.connect)
    except OSError:
        asker.close()
        raise
    return PodSockets(asker)


def _listener(path: Path) -> socket.socket:
    """A unix socket at `path` that only this user may open."""
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        _at(path, listener.bind)
    finally:
        os.umask(old)
    listener.listen(16)
    return listener


def fork_sandbox(
    hostname: str,
    tmpfs: list[tuple[str, int | None]],
    share_pid: bool = False,
    sysctls: list[tuple[str, str]] | None = None,
    listen: Path | None = None,
) -> tuple[int, int | None, PodSockets | NetnsSockets]:
    """Start a pod sandbox once its namespaces exist; returns its pid, with share_pid the pid of
    the pod PID namespace's init, and the factory of sockets inside the pod. `sysctls` are
    (/proc/sys path, value) to set in the pod's namespaces. Rootless, `listen` is where the
    sandbox also takes requests for sockets from podkit serve (pod_sockets). Raises
    OSError."""
    if threading.active_count() != 1:
        raise RuntimeError("the pod sandbox must be forked before any thread starts")
    mapping = subids.current()[0] if os.geteuid() != 0 else None
    sleep = _sleep()
    listener = _listener(listen) if listen is not None and sleep is None else None
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        ours.close()
        _child(
            hostname, tmpfs, sysctls or [], share_pid, parent, write_end, theirs, bool(mapping),
            sleep, listener,
        )  # fmt: skip
    os.close(write_end)
    theirs.close()
    if listener is not None:
        listener.close()  # the sandbox's now
    if mapping is not None and ours.recv(1) == b"u":  # b"": it failed before, and says why
        try:
            subids.apply(pid, mapping)
        except OSError as exc:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_end)
            ours.close()
            raise OSError(f"mapping the pod's user namespace: {exc}") from None
        ours.sendall(b"m")
    with os.fdopen(read_end, "rb") as f:
        reply = f.read().decode()  # EOF once the sandbox closed its fds
    if not reply.startswith("ready"):
        os.waitpid(pid, 0)
        ours.close()
        raise OSError(reply.removeprefix("error ") or "the pod sandbox exited during set-up")
    pid_ns = int(reply.split()[1])
    if sleep is not None:
        ours.close()
        return pid, pid_ns or None, NetnsSockets(pid)
    return pid, pid_ns or None, PodSockets(ours)


def stop_sandbox(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
