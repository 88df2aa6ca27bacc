"""Start one container inside its pod: `launcher SPEC_FD STATUS_FD` (podkit writes the spec).

The launcher joins the pod sandbox's network, UTS, IPC and mount namespaces, makes its own mount
and PID namespaces, builds the container's root (a registry image: an overlay of its layers under
the container's own upper dir; a built-in image: an overlay of the host's files over a tmpfs, so
writes vanish with the container), mounts the volumes, a fresh read-only /sys and a /dev of the
standard devices only, then forks the container's PID 1. PID 1 joins the container's cgroups and
its own cgroup namespace, mounts /proc with containerd's masked and read-only paths, makes the
root its own mount namespace's root (pivot_root), confines itself (confine.py: capabilities,
seccomp, user, no_new_privs) and execs the command.
PID 1 is forked as the launcher's sibling (CLONE_PARENT): podkit is its parent, which signals
and reaps it, so the launcher reports `started PID` or `error PID message` on the status fd and
exits, and a running container costs podkit no process of its own (a launcher is an
interpreter: about 4 MB). PID 1 and the launcher have PDEATHSIG set, so if podkit dies they
die, and PID 1's death tears down the container's PID namespace.
"""

from __future__ import annotations

import contextlib
import errno
import marshal
import os
import select
import signal
import sys

from podkit.runtime import linux
from podkit.runtime.confine import Confinement, mask_paths

# Every container starts a launcher, so its imports are kept to what it uses: no typing, json or
# socket at run time (about 8 ms of its start on this machine).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Not the host's, in a container: /proc, /sys and /dev are made fresh; /run too (built-in
# images), an empty tmpfs, as an image's /run is empty: the host's holds its daemons'
# sockets (dbus, containerd), and its submounts (ip netns) would make it read-only, with no
# room for the mount points the kubelet puts there (/var/run/secrets).
_SKIPPED = ("/proc", "/sys", "/dev", "/run")


def _skipped(path: str) -> bool:
    return any(path == top or path.startswith(top + "/") for top in _SKIPPED)


class Mount:
    def __init__(self, source: str, target: str, read_only: bool = False) -> None:
        self.source = source
        self.target = target  # path inside the container
        self.read_only = read_only


class LaunchSpec:
    """What podkit sends (marshal, over a pipe: enter.send_spec). Plain attributes, no
    dataclasses: the launcher starts for every container, and every import counts."""

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
        cgroup_mounts: list[list[str]] | None = None,
        confinement: dict[str, Any] | None = None,
        image_root: dict[str, str] | None = None,
        stdio: str = "",
        tty: bool = False,
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
        # [directory under /sys/fs/cgroup, filesystem type, mount options] of each hierarchy
        # the container has its own cgroup in: mounted read-only inside its cgroup namespace.
        self.cgroup_mounts = cgroup_mounts or []
        self.confinement = Confinement.from_json(confinement or {})
        # A registry image's root: {"store": dir, "options": overlay mount options whose lower
        # dirs are relative to it (oci/lower_dirs.py)}. None: the host's files (built-ins).
        self.image_root = image_root
        # `stdin: true`: a path to the pipe the supervisor writes (runtime/attach.py), the
        # container's stdin; with `tty`, a terminal: its stdin, stdout and stderr, controlling.
        self.stdio, self.tty = stdio, tty
        self.stdio_fd = -1  # that path, opened while the launcher still sees the host's files

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
            if target == "/" or _skipped(target):
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


def _mounts_under(root: str) -> list[str]:
    """The mount points at or below `root` (mountinfo's own list: os.path.ismount is fooled by
    an overlay's files, which show their lower layer's device)."""
    found: list[str] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].replace("\\040", " ")
            if target == root or target.startswith(root + "/"):
                found.append(target)
    return list(dict.fromkeys(found))


def _overlay(lower: str, target: str, scratch: str, tag: str) -> None:
    upper, work = f"{scratch}/upper/{tag}", f"{scratch}/work/{tag}"
    os.makedirs(upper, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    os.makedirs(target, exist_ok=True)
    linux.mount(
        "overlay", target, "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}"
    )


def _bind(source: str, target: str, read_only: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            open(target, "a").close()
    linux.mount(source, target, None, linux.MS_BIND | linux.MS_REC)
    if read_only:
        linux.remount_read_only(target)


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
        elif not os.path.isdir(source) or _skipped(source):
            continue
        elif any(p == source or p.startswith(source + "/") for p in points):
            with contextlib.suppress(OSError):  # has submounts: read-only, with them
                _bind(source, target, read_only=True)
        else:
            _overlay(source, target, scratch, f"top-{name}")


def _make_dev(dev: str, privileged: bool) -> None:
    """A fresh tmpfs /dev with the standard nodes, its own devpts, and the usual links; a
    privileged container gets the host's /dev, every device in it (as in Kubernetes)."""
    os.makedirs(dev, exist_ok=True)
    if privileged:
        linux.mount("/dev", dev, None, linux.MS_BIND | linux.MS_REC)
        return
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


_SYS_FLAGS = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC


def _make_sys(sys_dir: str, spec: LaunchSpec) -> None:
    """/sys: a fresh sysfs of the pod's network namespace, read-only unless privileged (runc's),
    with a tmpfs at /sys/fs/cgroup for the container's own cgroups (mounted by PID 1). Where
    sysfs cannot be mounted (rootless), the host's /sys, read-only all the way down."""
    os.makedirs(sys_dir, exist_ok=True)
    read_only = 0 if spec.confinement.privileged else linux.MS_RDONLY
    try:
        linux.mount("sysfs", sys_dir, "sysfs", _SYS_FLAGS | read_only)
    except PermissionError:
        linux.mount("/sys", sys_dir, None, linux.MS_BIND | linux.MS_REC)
        try:
            linux.make_read_only_recursive(sys_dir)
        except OSError:  # before Linux 5.12: one mount at a time
            for path in _mounts_under(sys_dir):
                linux.remount_read_only(path)
        return
    if spec.cgroup_mounts:
        linux.mount("tmpfs", f"{sys_dir}/fs/cgroup", "tmpfs", _SYS_FLAGS, "mode=0755")
        for name, _, _ in spec.cgroup_mounts:
            if name:
                os.makedirs(f"{sys_dir}/fs/cgroup/{name}", exist_ok=True)


def _image_overlay(root: str, image_root: dict[str, str]) -> None:
    """The image's layers under the container's own upper dir: mounted from the store's
    directory, whose short relative lower dirs keep the options within a page."""
    os.makedirs(root, exist_ok=True)
    os.chdir(image_root["store"])
    try:
        linux.mount("overlay", root, "overlay", 0, image_root["options"])
    finally:
        os.chdir("/")


def build_root(spec: LaunchSpec) -> tuple[str, list[str]]:
    """Assemble the container's root filesystem under spec.scratch; returns its path and the
    mounts (inside it) that make up the root filesystem itself."""
    scratch = spec.scratch
    os.makedirs(scratch, exist_ok=True)
    linux.mount("tmpfs", scratch, "tmpfs", 0, "mode=0755")
    root = f"{scratch}/root"
    if spec.image_root is not None:
        _image_overlay(root, spec.image_root)
        return _finish_root(spec, root, hide_state=False)
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
    os.makedirs(f"{root}/run", exist_ok=True)
    linux.mount("tmpfs", f"{root}/run", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0755")
    return _finish_root(spec, root, hide_state=True)


def _finish_root(spec: LaunchSpec, root: str, hide_state: bool) -> tuple[str, list[str]]:
    """/dev, /sys, a /proc to mount on, and the volumes, over the root filesystem."""
    rootfs = _mounts_under(root)  # before /dev, /sys, /proc and the volumes join them
    _make_dev(_inside(root, "/dev"), spec.confinement.privileged)
    if spec.tty and not spec.confinement.privileged:
        # Its terminal as /dev/console, as runc shows a `terminal: true` container's
        # (ttyname finds it there: the terminal belongs to the host's devpts, not its own).
        # By its path in this mount namespace (a copy of the host's): an fd's mount is the
        # host namespace's, which mount(2) refuses to bind from here.
        with contextlib.suppress(OSError):  # no such path here: it stays a terminal, unnamed
            _bind(os.ttyname(spec.stdio_fd), _inside(root, "/dev/console"), read_only=False)
    _make_sys(_inside(root, "/sys"), spec)
    if hide_state and spec.keep_host_mounts_under:  # other pods' files are none of its business
        hidden = _inside(root, spec.keep_host_mounts_under)
        os.makedirs(hidden, exist_ok=True)
        linux.mount("tmpfs", hidden, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0755")
    os.makedirs(_inside(root, "/proc"), exist_ok=True)
    for m in spec.mounts:
        _bind(m.source, _inside(root, m.target), m.read_only)
    return root, [p[len(root) :] or "/" for p in rootfs]


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


def _mount_cgroups(root: str, spec: LaunchSpec) -> None:
    """In the container's own cgroup namespace, so each hierarchy shows its cgroup as the root:
    read-only, as containerd mounts them, unless privileged."""
    if not spec.cgroup_mounts:
        return
    linux.unshare(linux.CLONE_NEWCGROUP)
    base = f"{root}/sys/fs/cgroup"
    read_only = 0 if spec.confinement.privileged else linux.MS_RDONLY
    for name, fstype, options in spec.cgroup_mounts:
        target = f"{base}/{name}" if name else base
        linux.mount("cgroup", target, fstype, _SYS_FLAGS | read_only, options or None)
    if any(name for name, _, _ in spec.cgroup_mounts):
        linux.mount(None, base, None, linux.MS_REMOUNT | _SYS_FLAGS | linux.MS_RDONLY)


def _make_read_only(rootfs: list[str]) -> None:
    """readOnlyRootFilesystem: the root's own mounts read-only (volumes, /dev, /proc keep
    theirs); called after pivot_root, so the paths are the container's."""
    for path in rootfs:
        linux.remount_read_only(path)


def _exec_container(
    spec: LaunchSpec, root: str, rootfs: list[str], report_fd: int, podkit: int
) -> None:
    """Runs as the container's PID 1, podkit's child; never returns. `podkit`: a pidfd of
    podkit (getppid() says 0 in a new PID namespace)."""
    linux.set_parent_death_signal(signal.SIGKILL)
    if select.select([podkit], [], [], 0)[0]:  # podkit died before prctl took effect
        os._exit(128)
    # Before pivot_root: the cgroup files are host paths (and /sys is read-only inside).
    cgroup_failure = _join_cgroups(spec.cgroup_procs)
    if cgroup_failure:
        os.write(report_fd, cgroup_failure.encode())
        os._exit(128)
    confinement = spec.confinement
    try:
        if spec.stdio_fd >= 0:
            for target in (0, 1, 2) if spec.tty else (0,):
                os.dup2(spec.stdio_fd, target)
            if spec.tty:  # its controlling terminal, as runc gives a `terminal: true` process
                import fcntl  # here, while the host's files are still the root
                import termios

                os.setsid()
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        # Its own mount namespace, whose root becomes the container's by pivot_root: a chroot
        # would leave the host's root above it, one chroot-and-climb away (CAP_SYS_CHROOT).
        linux.unshare(linux.CLONE_NEWNS)
        _mount_cgroups(root, spec)
        linux.mount("proc", f"{root}/proc", "proc", _SYS_FLAGS)
        if not confinement.privileged:
            mask_paths(root, confinement.masked_paths, confinement.read_only_paths)
        confinement.read_program()
        linux.pivot_root(root)
        workdir = spec.working_dir or "/"
        try:
            os.makedirs(workdir, exist_ok=True)  # runc creates a missing working directory too
            os.chdir(workdir)
        except OSError as exc:
            os.write(report_fd, f"chdir to working directory {workdir!r}: {exc.strerror}".encode())
            os._exit(128)
        if confinement.read_only_root:
            _make_read_only(rootfs)
        # Nothing of podkit's but stdin/out/err (and the exec report, closed by exec) goes in.
        os.closerange(3, report_fd)
        os.closerange(report_fd + 1, 1 << 16)
        # Every signal at its default, as runc gives them: an ignored one stays ignored
        # through exec (Python ignores SIGPIPE and SIGXFSZ; whoever started podkit may ignore
        # others). 32 and 33 are the C library's own: it refuses to change them.
        for sig in range(1, signal.NSIG):
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                with contextlib.suppress(OSError, ValueError):
                    signal.signal(sig, signal.SIG_DFL)
        held = {signal.SIGTERM, signal.SIGINT} if spec.hold_signals else set()
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    except OSError as exc:
        os.write(report_fd, f"container set-up: {exc}".encode())
        os._exit(128)
    try:
        confinement.apply()
    except OSError as exc:
        os.write(report_fd, f"security context: {exc}".encode())
        os._exit(128)
    try:
        os.execvpe(spec.argv[0], spec.argv, spec.env)
    except FileNotFoundError:
        msg = f'exec: "{spec.argv[0]}": executable file not found in $PATH'
    except PermissionError:
        msg = f'exec: "{spec.argv[0]}": permission denied'
    except OSError as exc:
        msg = f"exec: {exc}"
    os.write(report_fd, msg.encode())
    os._exit(128)


def run(spec: LaunchSpec, status_fd: int, podkit: int) -> int:
    if spec.stdio:
        flags = os.O_RDWR | os.O_NOCTTY if spec.tty else os.O_RDONLY
        spec.stdio_fd = os.open(spec.stdio, flags | os.O_CLOEXEC)
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
    root, rootfs = build_root(spec)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = linux.fork_sibling()
    if pid == 0:
        os.close(err_r)
        _exec_container(spec, root, rootfs, err_w, podkit)
    os.close(err_w)
    failure = os.read(err_r, 4096).decode()  # EOF without data: exec succeeded
    os.close(err_r)
    os.write(status_fd, (f"error {pid} {failure}\n" if failure else f"started {pid}\n").encode())
    return 0


def main() -> int:
    if not linux.die_with_parent():
        return 1
    podkit = os.pidfd_open(os.getppid())  # readable once podkit has exited
    # The spec (the container's environment, secrets included) comes over a pipe: never a file.
    spec_fd, status_fd = int(sys.argv[1]), int(sys.argv[2])
    with os.fdopen(spec_fd, "rb") as f:
        raw = f.read()
    if not raw:  # started ahead (launch.py) and not needed after all
        return 0
    spec = LaunchSpec.from_json(marshal.loads(raw))
    try:
        return run(spec, status_fd, podkit)
    except OSError as exc:  # before PID 1 existed
        os.write(status_fd, f"error 0 {exc}\n".encode())
        return 128


if __name__ == "__main__":
    sys.exit(main())
