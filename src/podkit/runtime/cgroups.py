"""Container resource limits with cgroups: v2 where the machine has it, else v1.

Layout, nested under the cgroup podkit itself runs in (so it works inside containers and VMs
whose cgroup root is not ours), or under the hierarchy root if that is not writable:

    <base>/podkit/<owner>/<pod-uid>/<container>-<restart>

`<owner>` is `<pid>-<start time>` of the podkit process. cgroupfs holds no ordinary files, so
the name is where ownership lives: a later podkit removes the trees of dead owners
(`clean_stale`) without ever touching a concurrently running podkit's pods.

The container's PID 1 joins its cgroup between fork and exec (launcher.py, LaunchSpec
.cgroup_procs), so everything the container runs is limited from its first instruction. The
launcher itself stays outside: its memory is not charged to the container.

Translation follows the kubelet (pkg/kubelet/cm, kuberuntime_container_linux.go) and runc:
limits.memory -> memory.max / memory.limit_in_bytes; limits.cpu -> CFS quota over a 100 ms
period (minimum 1 ms); requests.cpu -> cpu.shares (v1) or cpu.weight (v2); requests.memory is
accepted and sets nothing, as in the kubelet without the MemoryQoS feature.

Devices follow containerd and runc: a container may open only the standard character devices
(null, zero, full, random, urandom, tty, console, ptmx, pts) and may mknod any node, which it
then cannot open. On v1 that is the devices hierarchy's allowlist, on v2 an eBPF program
(device_filter.py); a privileged container may use every device.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from podkit.manifest.quantity import milli_value, parse_quantity, value
from podkit.runtime import device_filter, statedir

CPU_PERIOD_US = 100_000  # the kubelet's default cpuCFSQuotaPeriod
MIN_QUOTA_US = 1_000  # kubelet's MinQuotaPeriod: smaller quotas are raised to 1 ms
MIN_SHARES = 2
MAX_SHARES = 262_144
SHARES_PER_CPU = 1024
REQUIRED = ("cpu", "memory")
OPTIONAL_V1 = ("cpuacct", "devices")  # usage figures; the device allowlist
PODKIT_DIR = "podkit"
REMOVE_TIMEOUT = 2.0

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_OWNER = re.compile(r"(?P<pid>[0-9]+)-(?P<start>[0-9]+)\Z")


class CgroupError(Exception):
    """A cgroup could not be created, configured or joined; the message names the file."""


# --------------------------------------------------------------------------- pure translation


@dataclass(frozen=True)
class Resources:
    """A container's resources as the kubelet applies them; None means "not set"."""

    memory_limit: int | None = None  # bytes
    cpu_limit_millis: int | None = None
    cpu_request_millis: int | None = None

    @classmethod
    def from_spec(cls, resources: Mapping[str, Any] | None) -> Resources:
        """From a container's raw `resources` (ResourceRequirements); ValueError names the field.

        As the API server's defaulting does, a cpu limit without a cpu request requests the
        limit. A quantity of 0 means unset, as in the kubelet (no quota, no memory limit)."""
        resources = resources or {}
        limits = resources.get("limits") or {}
        requests = resources.get("requests") or {}

        def amount(section: Mapping[str, Any], kind: str, name: str) -> Fraction | None:
            raw = section.get(name)
            if raw is None:
                return None
            try:
                parsed = parse_quantity(raw)
            except ValueError as exc:
                raise ValueError(f"resources.{kind}.{name}: {exc}") from None
            if parsed < 0:
                raise ValueError(f"resources.{kind}.{name}: must be greater than or equal to 0")
            return parsed

        memory = amount(limits, "limits", "memory")
        cpu_limit = amount(limits, "limits", "cpu")
        cpu_request = amount(requests, "requests", "cpu")
        amount(requests, "requests", "memory")  # accepted (and checked), nothing to enforce
        if cpu_request is None:
            cpu_request = cpu_limit
        return cls(
            memory_limit=(value(memory) or None) if memory is not None else None,
            cpu_limit_millis=(milli_value(cpu_limit) or None) if cpu_limit is not None else None,
            cpu_request_millis=milli_value(cpu_request) if cpu_request is not None else None,
        )


@dataclass(frozen=True)
class Setting:
    """One value to write into one interface file of a container's cgroup."""

    controller: str  # "memory" or "cpu": which hierarchy (v1) / which controller must be on (v2)
    file: str
    value: str
    required: bool = True  # False: best effort, the file may not exist on this kernel


def cpu_shares(request_millis: int | None) -> int:
    """The kubelet's MilliCPUToShares: no request gets the minimum weight."""
    if not request_millis:
        return MIN_SHARES
    shares = request_millis * SHARES_PER_CPU // 1000
    return max(MIN_SHARES, min(MAX_SHARES, shares))


def cpu_weight(shares: int) -> int:
    """cgroup v2 cpu.weight from v1 shares, the formula of runc and the kubelet."""
    return 1 + ((shares - 2) * 9999) // 262_142


def cpu_quota(limit_millis: int, period_us: int = CPU_PERIOD_US) -> int:
    """The kubelet's milliCPUToQuota: CFS runtime per period, at least 1 ms."""
    return max(MIN_QUOTA_US, limit_millis * period_us // 1000)


def v2_settings(res: Resources) -> list[Setting]:
    """Interface files for a cgroup v2 container cgroup, in the order to write them."""
    out = [
        Setting("cpu", "cpu.weight", str(cpu_weight(cpu_shares(res.cpu_request_millis)))),
        # Kill the whole container on OOM, not one process of it (kubelet >= 1.28 on v2).
        Setting("memory", "memory.oom.group", "1", required=False),
    ]
    if res.cpu_limit_millis is not None:
        quota = cpu_quota(res.cpu_limit_millis)
        out.append(Setting("cpu", "cpu.max", f"{quota} {CPU_PERIOD_US}"))
    if res.memory_limit is not None:
        out.append(Setting("memory", "memory.max", str(res.memory_limit)))
        # The kubelet's default swapBehavior NoSwap: over its limit a container is OOMKilled,
        # it never swaps (a swapping container would not be limited at all, observably).
        out.append(Setting("memory", "memory.swap.max", "0", required=False))
    return out


def v1_settings(res: Resources) -> list[Setting]:
    """Interface files for cgroup v1 container cgroups, in the order to write them."""
    out = [Setting("cpu", "cpu.shares", str(cpu_shares(res.cpu_request_millis)))]
    if res.cpu_limit_millis is not None:
        out.append(Setting("cpu", "cpu.cfs_period_us", str(CPU_PERIOD_US)))
        out.append(Setting("cpu", "cpu.cfs_quota_us", str(cpu_quota(res.cpu_limit_millis))))
    if res.memory_limit is not None:
        out.append(Setting("memory", "memory.limit_in_bytes", str(res.memory_limit)))
        # No swap, as v2's memory.swap.max=0: swappiness 0 stops limit reclaim from swapping
        # anonymous memory, so the container is OOMKilled at its limit. memory.memsw.* would
        # do the same but exists only with swap accounting (swapaccount=1).
        out.append(Setting("memory", "memory.swappiness", "0", required=False))
    return out


# containerd's WithDefaultUnixDevices after a deny-all, plus runc's mknod of any node ("m").
ALLOWED_DEVICES = (
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",  # null
    "c 1:8 rwm",  # random
    "c 1:7 rwm",  # full
    "c 5:0 rwm",  # tty
    "c 1:5 rwm",  # zero
    "c 1:9 rwm",  # urandom
    "c 5:1 rwm",  # console
    "c 136:* rwm",  # pts
    "c 5:2 rwm",  # ptmx
)


def device_settings(all_devices: bool) -> list[Setting]:
    """v1 devices.deny/devices.allow writes: deny all, then the allowlist, one rule a write.
    A new cgroup inherits its parent's (podkit's: every device), so all_devices writes none."""
    if all_devices:
        return []
    return [Setting("devices", "devices.deny", "a")] + [
        Setting("devices", "devices.allow", rule) for rule in ALLOWED_DEVICES
    ]


def parse_keyed(text: str) -> dict[str, int]:
    """A flat-keyed cgroup file ("oom_kill 1\\nunder_oom 0") as a dict; odd lines skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


@dataclass(frozen=True)
class MountEntry:
    """One cgroup or cgroup2 line of /proc/self/mountinfo."""

    mount_point: str
    root: str  # the path inside the hierarchy that is mounted there
    fstype: str
    options: frozenset[str]  # mount and super options: "rw", "ro", controller names


def parse_mountinfo(text: str) -> list[MountEntry]:
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 6 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        options = frozenset(fields[5].split(",")) | frozenset(tail[2].split(","))
        point = fields[4].replace("\\040", " ")
        out.append(MountEntry(point, fields[3], tail[0], options))
    return out


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/self/cgroup as {controller: path}; the v2 entry is keyed ""."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            out[controller.removeprefix("name=")] = parts[2]
    return out


def own_dir(mount: MountEntry, own_path: str) -> str:
    """Where the cgroup `own_path` (as /proc/self/cgroup names it) is under `mount`.

    The mount may show only a subtree (mountinfo root != "/"); a path outside it (e.g. from a
    parent cgroup namespace) falls back to the mount point itself."""
    root = mount.root.rstrip("/")
    if own_path != root and not own_path.startswith(root + "/"):
        return mount.mount_point
    rel = own_path[len(root) :].strip("/")
    return os.path.join(mount.mount_point, rel) if rel else mount.mount_point


def ancestors(path: str, stop: str) -> list[str]:
    """`path` and its parents up to and including `stop`."""
    out = [path]
    while path != stop and path.startswith(stop.rstrip("/") + "/"):
        path = os.path.dirname(path)
        out.append(path)
    return out


def owner_name() -> str:
    """This podkit's directory name: `<pid>-<start time>`, unique across pid reuse."""
    return "-".join(statedir.owner_record().split())


def owner_alive(name: str) -> bool:
    match = _OWNER.match(name)
    return match is not None and statedir.owner_alive(f"{match['pid']} {match['start']}")


def _check_name(name: str, what: str) -> str:
    if not _NAME.match(name) or len(name) > 200:
        raise ValueError(f"{what} {name!r} cannot name a cgroup")
    return name


# --------------------------------------------------------------------------------- file I/O


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _write(path: Path, text: str) -> None:
    # One write(2) per value: cgroupfs parses each write on its own.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _pids(directory: Path) -> set[int]:
    """Processes in `directory` and every cgroup below it."""
    pids: set[int] = set()
    for d, _, _ in os.walk(directory):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in _read(Path(d) / "cgroup.procs").split() if p != "0")
    return pids


def _wait_exited(pids: Iterable[int], deadline: float) -> None:
    """Wait, by pidfd, until each process has exited or the deadline passes."""
    poller = select.poll()
    fds: list[int] = []
    try:
        for pid in pids:
            try:
                fds.append(os.pidfd_open(pid))
            except ProcessLookupError:
                continue
            poller.register(fds[-1], select.POLLIN)
        remaining = len(fds)
        while remaining:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                return
            for fd, _ in poller.poll(timeout * 1000):
                poller.unregister(fd)
                remaining -= 1
    finally:
        for fd in fds:
            os.close(fd)


def _kill_tree(directory: Path) -> set[int]:
    """SIGKILL every process in the tree; returns the pids it held."""
    pids = _pids(directory)
    me = os.getpid()
    if me in pids:  # never ourselves: kill the others one by one
        pids.discard(me)
    elif pids and (directory / "cgroup.kill").exists():
        # v2 (Linux >= 5.14): one write kills the subtree, forks racing the kill included.
        with contextlib.suppress(OSError):
            _write(directory / "cgroup.kill", "1")
            return pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _rmdir_tree(directory: Path) -> None:
    """rmdir the cgroup and its descendants, deepest first (cgroupfs removes the files)."""
    for d, _, _ in os.walk(directory, topdown=False):
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(d)


def remove_tree(directory: Path, timeout: float = REMOVE_TIMEOUT) -> bool:
    """Kill what still runs in the cgroup tree and remove it; False if it outlived `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if not directory.exists():
            return True
        pids = _kill_tree(directory)
        _wait_exited(pids, deadline)
        try:
            _rmdir_tree(directory)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                raise CgroupError(f"cannot remove cgroup {directory}: {exc.strerror}") from None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if not pids:
            # Exited processes the kernel has not yet unlinked: a short poll interval.
            time.sleep(min(remaining, 0.005))


def _rmdir_if_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):  # still used (ENOTEMPTY/EBUSY) or already gone
        os.rmdir(directory)


# ------------------------------------------------------------------------------ the objects


@dataclass(frozen=True)
class ContainerCgroup:
    """One container run's cgroup (one directory per v1 hierarchy, one on v2)."""

    version: int
    dirs: Mapping[str, Path]  # v1: controller -> dir (cpu and cpuacct may share one); v2: ""

    def unique_dirs(self) -> list[Path]:
        return list(dict.fromkeys(self.dirs.values()))

    def procs_files(self) -> list[str]:
        """The files the container's PID 1 writes "0" (itself) into before exec."""
        return [str(d / "cgroup.procs") for d in self.unique_dirs()]

    def _dir(self, controller: str) -> Path | None:
        return self.dirs.get("" if self.version == 2 else controller)

    def _keyed(self, controller: str, file: str) -> dict[str, int]:
        d = self._dir(controller)
        if d is None:
            return {}
        try:
            return parse_keyed(_read(d / file))
        except OSError:
            return {}

    def oom_killed(self, exit_code: int | None = None) -> bool:
        """Did the kernel's OOM killer kill a process of this container (Kubernetes' OOMKilled)?

        v2: memory.events oom_kill > 0. v1: memory.oom_control's oom_kill counter (Linux >=
        4.13); on older kernels, memory.failcnt > 0 and the container died of SIGKILL
        (`exit_code` 137), the best evidence they offer. Call it before remove()."""
        if self.version == 2:
            return self._keyed("memory", "memory.events").get("oom_kill", 0) > 0
        counters = self._keyed("memory", "memory.oom_control")
        if "oom_kill" in counters:
            return counters["oom_kill"] > 0
        d = self._dir("memory")
        try:
            failcnt = int(_read(d / "memory.failcnt")) if d is not None else 0
        except (OSError, ValueError):
            failcnt = 0
        return failcnt > 0 and exit_code == 128 + signal.SIGKILL

    def cpu_usage_usec(self) -> int | None:
        """CPU time used so far (v2 cpu.stat usage_usec, v1 cpuacct.usage); None if unknown."""
        if self.version == 2:
            return self._keyed("cpu", "cpu.stat").get("usage_usec")
        d = self._dir("cpuacct")
        if d is None:
            return None
        try:
            return int(_read(d / "cpuacct.usage")) // 1000
        except (OSError, ValueError):
            return None

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self.unique_dirs():
            out |= _pids(d)
        return out

    def remove(self, timeout: float = REMOVE_TIMEOUT) -> bool:
        """Kill stragglers and remove the cgroup; False if something outlived `timeout`."""
        deadline = time.monotonic() + timeout
        # Every hierarchy is tried, even after one failed.
        done = [remove_tree(d, max(0.0, deadline - time.monotonic())) for d in self.unique_dirs()]
        return all(done)


@dataclass
class PodCgroup:
    """The pod-level parent of a pod's container cgroups, created and removed with the pod."""

    driver: CgroupDriver
    uid: str
    containers: list[ContainerCgroup] = field(default_factory=list)

    def dirs(self) -> dict[str, Path]:
        return {k: root / self.driver.owner / self.uid for k, root in self.driver.roots.items()}

    def container(
        self, name: str, restart: int, resources: Resources, all_devices: bool = False
    ) -> ContainerCgroup:
        """Create `<container>-<restart>` with its limits and device allowlist written;
        CgroupError names the file.

        A fresh cgroup per run keeps the OOM counters of one run from leaking into the next."""
        leaf = f"{_check_name(name, 'container name')}-{int(restart)}"
        dirs = {k: d / leaf for k, d in self.dirs().items()}
        cg = ContainerCgroup(self.driver.version, dirs)
        self.driver._make(cg.unique_dirs())
        try:
            self.driver._apply(cg, resources, all_devices)
        except CgroupError:
            cg.remove()
            raise
        if self.driver.version == 2 and not all_devices:
            try:  # v2 has no devices.allow: an eBPF program does its work
                device_filter.attach(str(dirs[""]), list(ALLOWED_DEVICES))
            except OSError as exc:
                cg.remove()
                raise CgroupError(f"cannot attach the device filter to {dirs['']}: {exc}") from None
        self.containers.append(cg)
        return cg

    def remove(self, timeout: float = REMOVE_TIMEOUT) -> bool:
        """Remove the pod's cgroups (killing stragglers), then podkit's own empty parents."""
        deadline = time.monotonic() + timeout
        ok = True
        for d in dict.fromkeys(self.dirs().values()):
            ok = remove_tree(d, max(0.0, deadline - time.monotonic())) and ok
            _rmdir_if_empty(d.parent)  # the owner's directory, once its last pod is gone
            _rmdir_if_empty(d.parent.parent)  # podkit's, once no podkit runs pods here
        self.containers.clear()
        return ok


@dataclass(frozen=True)
class CgroupDriver:
    """Where podkit creates cgroups on this machine; made by detect()."""

    version: int
    roots: Mapping[str, Path]  # v1: controller -> <base>/podkit; v2: {"": <base>/podkit}
    controllers: tuple[str, ...] = REQUIRED  # v2: enabled for the subtree; v1: hierarchies used
    owner: str = field(default_factory=owner_name)
    # v1: controller -> the controllers mounted together in its hierarchy ("cpu,cpuacct")
    hierarchies: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        where = ", ".join(f"{k}: {d}" if k else str(d) for k, d in self.roots.items())
        return f"cgroup v{self.version} ({where})"

    def pod(self, uid: str) -> PodCgroup:
        """Create the pod-level cgroup `<root>/<owner>/<uid>`; CgroupError says why not."""
        pod = PodCgroup(self, _check_name(uid, "pod uid"))
        self._make(list(dict.fromkeys(pod.dirs().values())))
        return pod

    def settings(self, resources: Resources, all_devices: bool = False) -> list[Setting]:
        if self.version == 2:
            chosen = v2_settings(resources)
        else:
            chosen = v1_settings(resources) + device_settings(all_devices)
        # Only controllers this driver manages: detect() guarantees memory and cpu.
        return [s for s in chosen if s.controller in self.controllers]

    def mounts(self) -> list[list[str]]:
        """[directory under /sys/fs/cgroup, fstype, options] for each hierarchy a container
        has its own cgroup in (launcher.LaunchSpec.cgroup_mounts)."""
        if self.version == 2:
            return [["", "cgroup2", ""]]
        options = dict.fromkeys(self.hierarchies.get(c, c) for c in self.roots)
        return [[o, "cgroup", o] for o in options]

    def _make(self, dirs: list[Path]) -> None:
        for d in dirs:
            root = next((r for r in self.roots.values() if d.is_relative_to(r)), None)
            if root is None:
                raise CgroupError(f"{d} is not under podkit's cgroups")
            chain = [root, *(root / p for p in _prefixes(d.relative_to(root)))]
            # A parent can vanish under us (another podkit removing its empty podkit/): retry.
            if not any(self._make_chain(chain) for _ in range(5)):
                raise CgroupError(f"cannot create cgroup {d}: its parent keeps disappearing")

    def _make_chain(self, chain: list[Path]) -> bool:
        """mkdir each level of chain; False if a parent vanished meanwhile."""
        if self.version == 2:
            # Redone at podkit's base in case someone reset it since detect().
            self._enable_for_children(chain[0].parent)
        for i, level in enumerate(chain):
            try:
                os.mkdir(level)
            except FileExistsError:
                pass
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise CgroupError(f"cannot create cgroup {level}: {exc.strerror}") from None
            if self.version == 2 and i < len(chain) - 1:
                self._enable_for_children(level)
        return True

    def _enable_for_children(self, directory: Path) -> None:
        # v2 hands a controller to a cgroup's children only once the cgroup enables it.
        if not self.controllers:
            return
        try:
            _enable(directory, self.controllers)
        except OSError as exc:
            names = " and ".join(self.controllers)
            raise CgroupError(f"cannot enable {names} in {directory}: {exc.strerror}") from None

    def _apply(self, cg: ContainerCgroup, resources: Resources, all_devices: bool) -> None:
        for s in self.settings(resources, all_devices):
            d = cg.dirs[""] if self.version == 2 else cg.dirs[s.controller]
            path = d / s.file
            try:
                _write(path, s.value)
            except OSError as exc:
                optional = (errno.ENOENT, errno.EINVAL, errno.EACCES, errno.EPERM, errno.EOPNOTSUPP)
                if s.required or exc.errno not in optional:
                    raise CgroupError(
                        f"cannot set {s.file}={s.value} in {d}: {exc.strerror}"
                    ) from None


def _prefixes(rel: Path) -> list[Path]:
    parts = rel.parts
    return [Path(*parts[: i + 1]) for i in range(len(parts))]


def _enable(directory: Path, controllers: Iterable[str]) -> None:
    """Enable controllers in directory/cgroup.subtree_control if they are not already."""
    current = set(_read(directory / "cgroup.subtree_control").split())
    missing = [c for c in controllers if c not in current]
    if missing:
        _write(directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))


# -------------------------------------------------------------------------------- detection


def _probe_root(base: str) -> tuple[Path | None, str]:
    """Can podkit create `<base>/podkit`? Leaves nothing new behind; (root, "") or (None, why)."""
    root = Path(base) / PODKIT_DIR
    # Other podkits may make it (their pods) or remove it (their clean-up, once it is empty)
    # at the same moment: what this one sees may be gone the next instant, so look again.
    for _ in range(10):
        try:
            os.mkdir(root)
        except FileExistsError:
            try:  # held open, so the answer is about this directory even if it goes meanwhile
                held = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # removed meanwhile
            try:
                writable = os.access(f"/proc/self/fd/{held}", os.W_OK)
            finally:
                os.close(held)
            return (root, "") if writable else (None, f"{root} is not writable")
        except OSError as exc:
            return None, f"cannot create {root}: {exc.strerror}"
        with contextlib.suppress(OSError):  # removed meanwhile, or holding pods already
            os.rmdir(root)
        return root, ""
    return root, ""  # made and removed by others all along: it can be made


def _not_root_hint() -> str:
    return " (podkit is not running as root)" if os.geteuid() != 0 else ""


def _detect_v2(mount: MountEntry, own_path: str | None) -> tuple[CgroupDriver | None, str]:
    if "ro" in mount.options:
        return None, f"{mount.mount_point} is mounted read-only"
    start = own_dir(mount, own_path) if own_path is not None else mount.mount_point
    reasons = []
    # From our own cgroup upwards: v2 forbids enabling controllers for children of a cgroup
    # that holds processes (ours does), so usually our parent hosts podkit/ beside us.
    for base in ancestors(start, mount.mount_point):
        try:
            available = set(_read(Path(base) / "cgroup.controllers").split())
            missing = [c for c in REQUIRED if c not in available]
            if missing:
                reasons.append(f"{base}: no {' or '.join(missing)} controller")
                continue
            _enable(Path(base), REQUIRED)
        except OSError as exc:
            reasons.append(f"{base}: cannot enable cpu and memory: {exc.strerror}")
            continue
        root, why = _probe_root(base)
        if root is not None:
            return CgroupDriver(2, {"": root}), ""
        reasons.append(why)
    return None, "cgroup v2: " + "; ".join(reasons) + _not_root_hint()


def _controllers_of(mount: MountEntry) -> str:
    """The controllers a v1 hierarchy was mounted with, as mount(2) wants them back."""
    known = {*REQUIRED, *OPTIONAL_V1, "cpuset", "blkio", "freezer", "net_cls", "net_prio"}
    known |= {"perf_event", "hugetlb", "pids", "rdma", "misc"}
    return ",".join(sorted(mount.options & known))


def _detect_v1(mounts: list[MountEntry], own: Mapping[str, str]) -> tuple[CgroupDriver | None, str]:
    roots: dict[str, Path] = {}
    hierarchies: dict[str, str] = {}
    for controller in (*REQUIRED, *OPTIONAL_V1):
        mount = next((m for m in mounts if m.fstype == "cgroup" and controller in m.options), None)
        optional = controller in OPTIONAL_V1
        if mount is None:
            if optional:
                continue
            return (
                None,
                f"no cgroup v2 with memory and cpu, and no cgroup v1 {controller} hierarchy",
            )
        if "ro" in mount.options:
            if optional:
                continue
            return None, f"{mount.mount_point} is mounted read-only"
        own_path = own.get(controller)
        bases = [own_dir(mount, own_path)] if own_path is not None else []
        reasons = []
        for base in dict.fromkeys([*bases, mount.mount_point]):
            root, why = _probe_root(base)
            if root is not None:
                roots[controller] = root
                hierarchies[controller] = _controllers_of(mount)
                break
            reasons.append(why)
        else:
            if optional:
                continue
            return None, f"cgroup v1 {controller}: " + "; ".join(reasons) + _not_root_hint()
    return CgroupDriver(1, roots, controllers=tuple(roots), hierarchies=hierarchies), ""


def detect(
    mountinfo: str | None = None, proc_cgroup: str | None = None
) -> tuple[CgroupDriver | None, str]:
    """Find where podkit can enforce limits: (driver, "") or (None, reason to print once).

    Prefers cgroup v2 (with cpu and memory available), else v1 memory and cpu hierarchies."""
    try:
        mountinfo = _read(Path("/proc/self/mountinfo")) if mountinfo is None else mountinfo
        proc_cgroup = _read(Path("/proc/self/cgroup")) if proc_cgroup is None else proc_cgroup
    except OSError as exc:
        return None, f"cannot read /proc: {exc.strerror}"
    mounts = parse_mountinfo(mountinfo)
    own = parse_proc_cgroup(proc_cgroup)
    v2_mounts = sorted(
        (m for m in mounts if m.fstype == "cgroup2"),
        key=lambda m: m.mount_point != "/sys/fs/cgroup",
    )
    for mount in v2_mounts:
        try:
            available = set(_read(Path(mount.mount_point) / "cgroup.controllers").split())
        except OSError:
            continue
        if all(c in available for c in REQUIRED):
            return _detect_v2(mount, own.get(""))
    if not mounts:
        return None, "no cgroup filesystem is mounted"
    return _detect_v1(mounts, own)


def clean_stale(driver: CgroupDriver, timeout: float = REMOVE_TIMEOUT) -> list[str]:
    """Remove the cgroup trees of podkit runs that are gone (killed, crashed); returns them.

    Their containers died with them (PDEATHSIG); anything left inside is killed."""
    cleaned: list[str] = []
    for root in dict.fromkeys(driver.roots.values()):
        try:
            children = [d for d in root.iterdir() if d.is_dir()]
        except FileNotFoundError:
            continue
        for d in children:
            if d.name == driver.owner or not _OWNER.match(d.name) or owner_alive(d.name):
                continue
            if remove_tree(d, timeout):
                cleaned.append(str(d))
        _rmdir_if_empty(root)
    return cleaned
