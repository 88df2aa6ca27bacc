"""Start one container inside its pod: `launcher SPEC_FD STATUS_FD` (podkit writes the spec).

The launcher joins the pod sandbox's network, UTS, IPC and mount namespaces, makes its own mount
and PID namespaces, builds the container's root (an overlay of the host's files over a tmpfs, so
writes vanish with the container), mounts the volumes, then forks the container's PID 1 which
chroots and execs the command. The launcher stays as the container's parent: it forwards signals,
reports `started` or `error ...` on the status fd, and exits with the container's exit code
(128 + signal when killed, as Kubernetes reports it). Every process here has PDEATHSIG set, so if
podkit dies the whole chain dies, and PID 1's death tears down the container's PID namespace.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
from typing import Any

from podkit.runtime import linux

FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)
_SKIP_PREFIXES = ("/proc", "/sys", "/dev")


class Mount:
    def __init__(self, source: str, target: str, read_only: bool = False) -> None:
        self.source = source
        self.target = target  # path inside the container
        self.read_only = read_only


class LaunchSpec:
    """What podkit sends (as JSON over a pipe). Plain attributes, no dataclasses: the launcher
    starts for every container, and every import counts."""

    def __init__(
        self,
        sandbox_pid: int,
        scratch: str,  # host dir where this container's root is assembled (on a tmpfs)
        argv: list[str],
        env: dict[str, str],
        working_dir: str | None = None,
        mounts: list[Mount] | None = None,
        keep_host_mounts_under: str = "",  # the state dir: never shown to containers
        hold_signals: bool = False,
        pid_ns_pid: int | None = None,
        cgroup_procs: list[str] | None = None,
    ) -> None:
        self.sandbox_pid, self.scratch, self.argv, self.env = sandbox_pid, scratch, argv, env
        self.working_dir = working_dir
        self.mounts = mounts or []
        self.keep_host_mounts_under = keep_host_mounts_under
        # Built-in images unblock SIGTERM once they handle it (common/early_stop.py): a stop
        # that comes while they start stays pending instead of being dropped by PID 1's rule.
        self.hold_signals = hold_signals
        self.pid_ns_pid = pid_ns_pid  # join this process's PID namespace instead of a new one
        # cgroup.procs files (runtime/cgroups.py) the container's PID 1 joins between fork and
        # exec, so the container and all it forks are limited from their first instruction.
        self.cgroup_procs = cgroup_procs or []

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LaunchSpec:
        mounts = [Mount(**m) for m in raw.pop("mounts", [])]
        return cls(mounts=mounts, **raw)


def _host_mount_points(state_dir: str) -> list[str]:
    """Mount points besides / whose files a container should see (e.g. a separate /home)."""
    points: list[str] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].replace("\\040", " ")
            if target == "/" or target.startswith(_SKIP_PREFIXES):
                continue
            if state_dir and (target + "/").startswith(state_dir.rstrip("/") + "/"):
                continue
            points.append(target)
    return sorted(set(points), key=lambda p: p.count("/"))


def _inside(root: str, path: str) -> str:
    """The container's `path` under `root`, its symlinks followed as the container sees them: an
    absolute link starts again at `root` and `..` stops there (runc's securejoin). Joined plainly,
    /var/run/secrets would follow the host's /var/run -> /run link out of the root, and a mount
    meant for the container would land on the host."""
    todo = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        here = os.path.join(root, *done, part)
        if not os.path.islink(here):
            done.append(part)
            continue
        links += 1
        if links > 40:
            raise OSError(errno.ELOOP, f"too many symbolic links in {path}")
        target = os.readlink(here)
        if target.startswith("/"):
            done = []
        todo[:0] = [p for p in target.split("/") if p not in ("", ".")]
    return os.path.join(root, *done)


def _overlay(lower: str, target: str, scratch: str, tag: str) -> None:
    upper, work = f"{scratch}/upper/{tag}", f"{scratch}/work/{tag}"
    os.makedirs(upper, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    os.makedirs(target, exist_ok=True)
    linux.mount(
        "overlay", target, "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}"
    )


# nosuid, nodev, noexec, noatime, nodiratime, relatime: statvfs's ST_* equal the MS_* flags.
_LOCKABLE = 0x2 | 0x4 | 0x8 | 0x400 | 0x800 | 0x1000


def _bind(source: str, target: str, read_only: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            open(target, "a").close()
    linux.mount(source, target, None, linux.MS_BIND | linux.MS_REC)
    if read_only:
        # Keep the flags the kernel locks on mounts from another user namespace (rootless).
        kept = os.statvfs(target).f_flag & _LOCKABLE
        linux.mount(None, target, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | kept)


# The device nodes runc gives a container; the host's /dev (disks and all) stays outside.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def _root_by_entries(root: str, scratch: str, points: list[str]) -> None:
    """A tmpfs root holding an overlay of each top-level directory of the host's /."""
    os.makedirs(root, exist_ok=True)  # the refused overlay made it already
    linux.mount("tmpfs", root, "tmpfs", 0, "mode=0755")
    for name in sorted(os.listdir("/")):
        source, target = f"/{name}", f"{root}/{name}"
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        elif not os.path.isdir(source) or source.startswith(_SKIP_PREFIXES):
            continue
        elif any(p == source or p.startswith(source + "/") for p in points):
            with contextlib.suppress(OSError):  # has submounts: read-only, with them
                _bind(source, target, read_only=True)
        else:
            _overlay(source, target, scratch, f"top-{name}")


def _make_dev(dev: str) -> None:
    """A fresh tmpfs /dev with the standard nodes, its own devpts, and the usual links."""
    os.makedirs(dev, exist_ok=True)
    linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID, "mode=0755,size=65536k")
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            _bind(f"/dev/{name}", f"{dev}/{name}", read_only=False)
    os.makedirs(f"{dev}/pts")
    linux.mount(
        "devpts", f"{dev}/pts", "devpts", linux.MS_NOSUID, "newinstance,ptmxmode=0666,mode=0620"
    )
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    os.makedirs(f"{dev}/shm")
    os.makedirs(f"{dev}/mqueue")
    with contextlib.suppress(OSError):  # the pod's IPC namespace's POSIX message queues
        linux.mount("mqueue", f"{dev}/mqueue", "mqueue", linux.MS_NOSUID | linux.MS_NODEV)
    for link, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ):
        os.symlink(target, f"{dev}/{link}")


def build_root(spec: LaunchSpec) -> str:
    """Assemble the container's root filesystem under spec.scratch and return its path."""
    scratch = spec.scratch
    os.makedirs(scratch, exist_ok=True)
    linux.mount("tmpfs", scratch, "tmpfs", 0, "mode=0755")
    root = f"{scratch}/root"
    points = _host_mount_points(spec.keep_host_mounts_under)
    try:
        _overlay("/", root, scratch, "root")
    except OSError:
        # In a user namespace (rootless) the kernel will not overlay a mount with submounts:
        # overlay each top-level directory instead.
        _root_by_entries(root, scratch, points)
        points = [p for p in points if not os.path.ismount(_inside(root, p))]
    for i, point in enumerate(points):
        target = _inside(root, point)
        if os.path.ismount(target):
            continue  # brought in with its parent
        try:
            _overlay(point, target, scratch, f"m{i}")
        except OSError:  # a filesystem overlay cannot sit on: show it read-only instead
            with contextlib.suppress(OSError):
                _bind(point, target, read_only=True)
    _make_dev(_inside(root, "/dev"))
    _bind("/sys", _inside(root, "/sys"), read_only=True)
    if spec.keep_host_mounts_under:  # other pods' volumes and logs are none of its business
        hidden = _inside(root, spec.keep_host_mounts_under)
        os.makedirs(hidden, exist_ok=True)
        linux.mount("tmpfs", hidden, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0755")
    os.makedirs(_inside(root, "/proc"), exist_ok=True)
    for m in spec.mounts:
        _bind(m.source, _inside(root, m.target), m.read_only)
    return root


def _join_cgroups(procs_files: list[str]) -> str | None:
    """Move this process into each cgroup ("0" means the writer); an error message or None."""
    for path in procs_files:
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        except OSError as exc:
            return f"cgroup: cannot join {os.path.dirname(path)}: {exc.strerror}"
    return None


def _exec_container(spec: LaunchSpec, root: str, report_fd: int) -> None:
    """Runs as the container's PID 1; never returns."""
    # Before chroot: the cgroup files are host paths (and /sys is read-only inside).
    cgroup_failure = _join_cgroups(spec.cgroup_procs)
    if cgroup_failure:
        os.write(report_fd, cgroup_failure.encode())
        os._exit(128)
    try:
        linux.set_parent_death_signal(signal.SIGKILL)
        linux.mount("proc", f"{root}/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV)
        os.chroot(root)
        workdir = spec.working_dir or "/"
        try:
            os.makedirs(workdir, exist_ok=True)  # runc creates a missing working directory too
            os.chdir(workdir)
        except OSError as exc:
            os.write(report_fd, f"chdir to working directory {workdir!r}: {exc.strerror}".encode())
            os._exit(128)
        # Nothing of podkit's but stdin/out/err (and the exec report, closed by exec) goes in.
        os.closerange(3, report_fd)
        os.closerange(report_fd + 1, 1 << 16)
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        held = {signal.SIGTERM, signal.SIGINT} if spec.hold_signals else set()
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        os.execvpe(spec.argv[0], spec.argv, spec.env)
    except FileNotFoundError:
        msg = f'exec: "{spec.argv[0]}": executable file not found in $PATH'
    except PermissionError:
        msg = f'exec: "{spec.argv[0]}": permission denied'
    except OSError as exc:
        msg = f"exec: {exc}"
    os.write(report_fd, msg.encode())
    os._exit(128)


def run(spec: LaunchSpec, status_fd: int) -> int:
    names = ["net", "uts", "ipc", "mnt"]
    if os.readlink(f"/proc/{spec.sandbox_pid}/ns/user") != os.readlink("/proc/self/ns/user"):
        names.insert(0, "user")  # rootless: its user namespace first, for the rights in it
    pod_ns = [os.open(f"/proc/{spec.sandbox_pid}/ns/{ns}", os.O_RDONLY) for ns in names]
    if spec.pid_ns_pid:  # shareProcessNamespace: the container joins the pod's PID namespace
        pod_ns.append(os.open(f"/proc/{spec.pid_ns_pid}/ns/pid", os.O_RDONLY))
    for fd in pod_ns:
        linux.setns(fd)
        os.close(fd)
    linux.unshare(linux.CLONE_NEWNS | (0 if spec.pid_ns_pid else linux.CLONE_NEWPID))
    root = build_root(spec)
    # Forward signals from before the fork on, so a stop during start-up is never lost.
    child = 0
    pending: list[int] = []

    def forward(sig: int, _frame: object) -> None:
        if child:
            os.kill(child, sig)
        else:
            pending.append(sig)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())  # podkit started us with stops held
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        _exec_container(spec, root, err_w)
    child = pid
    for signum in pending:
        os.kill(pid, signum)
    os.close(err_w)
    failure = os.read(err_r, 4096).decode()  # EOF without data: exec succeeded
    os.close(err_r)
    os.write(status_fd, (f"error {failure}\n" if failure else f"started {pid}\n").encode())
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def main() -> int:
    parent = os.getppid()
    linux.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:
        return 1
    # The spec (the container's environment, secrets included) comes over a pipe: never a file.
    spec_fd, status_fd = int(sys.argv[1]), int(sys.argv[2])
    with os.fdopen(spec_fd, "rb") as f:
        spec = LaunchSpec.from_json(json.loads(f.read()))
    try:
        return run(spec, status_fd)
    except OSError as exc:
        os.write(status_fd, f"error {exc}\n".encode())
        return 128


if __name__ == "__main__":
    sys.exit(main())
