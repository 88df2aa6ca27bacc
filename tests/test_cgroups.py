"""Resources: limits.memory and limits.cpu enforced with cgroups, OOMKilled reported.

The pure part (quantities -> interface file values, detection) runs anywhere; the real part
starts processes in cgroups the way launcher.py does (join between fork and exec) and is
skipped, with detect()'s reason, only where cgroups are unavailable.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from podkit.runtime import cgroups, launcher, linux, sandbox
from podkit.runtime.cgroups import (
    CgroupDriver,
    ContainerCgroup,
    PodCgroup,
    Resources,
    Setting,
    cpu_quota,
    cpu_shares,
    cpu_weight,
)
from podkit.runtime.enter import send_spec
from podkit.runtime.launch import Spawned

MiB = 1 << 20
ALLOCATE_200MIB = "chunks = []\nfor _ in range(200):\n    chunks.append(b'x' * (1 << 20))\n"
BUSY_LOOP = "while True:\n    pass\n"


def res(limits: dict | None = None, requests: dict | None = None) -> Resources:
    return Resources.from_spec({"limits": limits or {}, "requests": requests or {}})


def files(settings: list[Setting]) -> dict[str, str]:
    return {s.file: s.value for s in settings}


# ----------------------------------------------------------------------------------- pure


def test_quantities_become_v1_and_v2_file_values() -> None:
    r = res({"memory": "64Mi", "cpu": "250m"})
    assert r == Resources(memory_limit=67108864, cpu_limit_millis=250, cpu_request_millis=250)
    assert files(cgroups.v2_settings(r)) == {
        "cpu.weight": "10",
        "memory.oom.group": "1",
        "cpu.max": "25000 100000",
        "memory.max": "67108864",
        "memory.swap.max": "0",
    }
    assert files(cgroups.v1_settings(r)) == {
        "cpu.shares": "256",
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_quota_us": "25000",
        "memory.limit_in_bytes": "67108864",
        "memory.swappiness": "0",
    }
    assert files(cgroups.v2_settings(res({"cpu": "2"})))["cpu.max"] == "200000 100000"
    assert files(cgroups.v1_settings(res({"cpu": 2})))["cpu.cfs_quota_us"] == "200000"
    assert res({"memory": "1G"}).memory_limit == 10**9
    assert res({"memory": "1.5Ki"}).memory_limit == 1536


def test_best_effort_sets_only_the_minimum_weight() -> None:
    r = Resources.from_spec(None)
    assert r == Resources()
    assert files(cgroups.v2_settings(r)) == {"cpu.weight": "1", "memory.oom.group": "1"}
    assert files(cgroups.v1_settings(r)) == {"cpu.shares": "2"}


def test_requests_and_zero_quantities_follow_kubernetes() -> None:
    # A cpu limit without a request requests the limit (API defaulting); a request stands alone.
    assert res({"cpu": "500m"}).cpu_request_millis == 500
    assert res({"cpu": "1"}, {"cpu": "100m"}).cpu_request_millis == 100
    assert res(requests={"cpu": "100m"}) == Resources(cpu_request_millis=100)
    # requests.memory is accepted and sets nothing; 0 means "no limit" as in the kubelet.
    assert res(requests={"memory": "1Gi"}) == Resources()
    assert res({"memory": "0", "cpu": "0"}).memory_limit is None
    assert res({"cpu": "0"}).cpu_limit_millis is None
    with pytest.raises(ValueError, match=r"resources\.limits\.memory: quantities must match"):
        res({"memory": "64MB"})
    with pytest.raises(ValueError, match=r"resources\.requests\.cpu"):
        res(requests={"cpu": "lots"})
    with pytest.raises(ValueError, match=r"limits\.cpu: must be greater than or equal to 0"):
        res({"cpu": "-1"})


def test_cpu_formulas_match_the_kubelet() -> None:
    # MilliCPUToShares, milliCPUToQuota and runc's shares -> weight, with their known values.
    assert [cpu_shares(m) for m in (None, 0, 1, 100, 250, 1000, 2000, 300_000)] == [
        2,
        2,
        2,
        102,
        256,
        1024,
        2048,
        262_144,
    ]
    assert [cpu_weight(s) for s in (2, 102, 256, 1024, 2048, 262_144)] == [1, 4, 10, 39, 79, 10_000]
    assert [cpu_quota(m) for m in (1, 5, 10, 250, 1000, 2000, 1500)] == [
        1000,
        1000,
        1000,
        25_000,
        100_000,
        200_000,
        150_000,
    ]


def test_oom_counters_are_parsed_from_flat_keyed_files() -> None:
    assert cgroups.parse_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n") == {
        "oom_kill_disable": 0,
        "under_oom": 0,
        "oom_kill": 2,
    }
    events = "low 0\nhigh 0\nmax 17\noom 1\noom_kill 1\noom_group_kill 0\n"
    assert cgroups.parse_keyed(events)["oom_kill"] == 1


HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = "4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n"


def test_mountinfo_and_proc_cgroup_parsing() -> None:
    mounts = cgroups.parse_mountinfo(HYBRID_MOUNTINFO)
    assert [(m.mount_point, m.fstype) for m in mounts] == [
        ("/sys/fs/cgroup/cpu", "cgroup"),
        ("/sys/fs/cgroup/cpuacct", "cgroup"),
        ("/sys/fs/cgroup/memory", "cgroup"),
        ("/sys/fs/cgroup/unified", "cgroup2"),
    ]
    assert "memory" in mounts[2].options
    own = cgroups.parse_proc_cgroup(HYBRID_CGROUP)
    assert own == {"memory": "/process_api/abc", "cpuacct": "/", "cpu": "/", "": "/"}
    assert cgroups.own_dir(mounts[2], own["memory"]) == "/sys/fs/cgroup/memory/process_api/abc"
    assert cgroups.own_dir(mounts[0], own["cpu"]) == "/sys/fs/cgroup/cpu"
    assert cgroups.parse_proc_cgroup("3:cpu,cpuacct:/a\n1:name=systemd:/b\n") == {
        "cpu": "/a",
        "cpuacct": "/a",
        "systemd": "/b",
    }


def test_own_dir_handles_mounted_subtrees() -> None:
    # A container that sees only its own subtree (mountinfo root /docker/x) at /sys/fs/cgroup.
    (m,) = cgroups.parse_mountinfo(
        "40 31 0:38 /docker/x /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    assert "ro" in m.options
    assert cgroups.own_dir(m, "/docker/x/app") == "/sys/fs/cgroup/app"
    assert cgroups.own_dir(m, "/docker/x") == "/sys/fs/cgroup"
    assert cgroups.own_dir(m, "/elsewhere") == "/sys/fs/cgroup"  # outside: the mount itself
    assert cgroups.ancestors("/sys/fs/cgroup/a/b", "/sys/fs/cgroup") == [
        "/sys/fs/cgroup/a/b",
        "/sys/fs/cgroup/a",
        "/sys/fs/cgroup",
    ]


def _fake_v2(tmp_path: Path) -> Path:
    """A cgroup2-shaped tree of plain files: root, user.slice, user.slice/session.scope."""
    root = tmp_path / "cg"
    for d in ("", "user.slice", "user.slice/session.scope"):
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("cpu memory\n")
    (root / "user.slice/cgroup.subtree_control").write_text("")
    # Our own cgroup holds processes: v2 refuses to enable controllers there (EBUSY);
    # a directory in place of the file makes that write fail the same way.
    (root / "user.slice/session.scope/cgroup.subtree_control").mkdir()
    return root


def test_detect_v2_nests_beside_our_own_cgroup(tmp_path: Path) -> None:
    root = _fake_v2(tmp_path)
    mountinfo = f"41 31 0:38 / {root} rw,relatime - cgroup2 cgroup2 rw\n"
    driver, why = cgroups.detect(mountinfo, "0::/user.slice/session.scope\n")
    assert why == ""
    assert driver is not None and driver.version == 2
    assert driver.roots == {"": root / "user.slice/podkit"}
    assert driver.controllers == ("cpu", "memory")
    assert (root / "user.slice/cgroup.subtree_control").read_text() == "+cpu +memory"
    assert not (root / "user.slice/podkit").exists()  # the probe leaves nothing behind
    assert driver.settings(res({"memory": "64Mi"}))[-1] == Setting(
        "memory", "memory.swap.max", "0", required=False
    )


def test_detect_explains_why_limits_cannot_be_enforced(tmp_path: Path) -> None:
    root = _fake_v2(tmp_path)
    (root / "cgroup.controllers").write_text("pids\n")
    empty_v2 = f"41 31 0:38 / {root} rw,relatime - cgroup2 cgroup2 rw\n"
    driver, why = cgroups.detect(empty_v2, "0::/\n")
    assert driver is None
    assert why == "no cgroup v2 with memory and cpu, and no cgroup v1 cpu hierarchy"
    driver, why = cgroups.detect("", "")
    assert (driver, why) == (None, "no cgroup filesystem is mounted")
    (root / "cgroup.controllers").write_text("cpu memory\n")
    read_only = f"41 31 0:38 / {root} ro,relatime - cgroup2 cgroup2 rw\n"
    assert cgroups.detect(read_only, "0::/\n") == (None, f"{root} is mounted read-only")


def test_detect_v1_nests_under_each_hierarchys_own_cgroup(tmp_path: Path) -> None:
    for d in ("cpu", "cpuacct", "memory/process_api/abc"):
        (tmp_path / d).mkdir(parents=True)
    mountinfo = HYBRID_MOUNTINFO.replace("/sys/fs/cgroup/", f"{tmp_path}/")
    driver, why = cgroups.detect(mountinfo, HYBRID_CGROUP)
    assert why == "" and driver is not None and driver.version == 1
    assert driver.roots == {
        "cpu": tmp_path / "cpu/podkit",
        "memory": tmp_path / "memory/process_api/abc/podkit",
        "cpuacct": tmp_path / "cpuacct/podkit",
    }
    # The unified mount has no controllers here, so v1 it is.
    assert driver.describe().startswith("cgroup v1 (cpu: ")


def test_names_that_cannot_be_cgroups_are_refused() -> None:
    driver = CgroupDriver(2, {"": Path("/nonexistent/podkit")}, controllers=())
    with pytest.raises(ValueError, match="pod uid"):
        driver.pod("../escape")
    pod = PodCgroup(driver, "uid")
    with pytest.raises(ValueError, match="container name"):
        pod.container("a/b", 0, Resources())


# ----------------------------------------------------------------------------------- real


@pytest.fixture(scope="module")
def driver() -> CgroupDriver:
    found, why = cgroups.detect()
    assert found is not None, f"this machine kind has cgroups; detect() said: {why}"
    return found


@pytest.fixture
def pod(driver: CgroupDriver) -> Iterator[PodCgroup]:
    p = driver.pod(f"test-{uuid.uuid4()}")
    dirs = list(p.dirs().values())
    yield p
    assert p.remove()
    assert not any(d.exists() for d in dirs)


def start_in(cg: ContainerCgroup, code: str) -> subprocess.Popen[bytes]:
    """Start python3 the way launcher.py starts PID 1: join the cgroups after fork, then exec."""

    def join() -> None:
        failure = launcher._join_cgroups(cg.procs_files())
        if failure:
            raise OSError(failure)

    return subprocess.Popen([sys.executable, "-S", "-c", code], preexec_fn=join)


def test_podkits_starting_at_once_all_find_the_cgroups(driver: CgroupDriver) -> None:
    """Each podkit's detect() may make and remove <hierarchy>/podkit to probe it, and its
    clean-up removes it once empty; another podkit doing either at the same moment must not
    fail, nor conclude that limits cannot be enforced (a pod's supervisor died of it)."""
    code = (
        "from podkit.runtime import cgroups\n"
        "for _ in range(300):\n"
        "    found, why = cgroups.detect()\n"
        "    assert found is not None, why\n"
        "    cgroups.clean_stale(found)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    failures = [p.communicate(timeout=60)[1] for p in procs if p.wait(timeout=60) != 0]
    assert failures == []


def test_over_its_memory_limit_a_container_is_oom_killed(pod: PodCgroup) -> None:
    cg = pod.container("hog", 0, res({"memory": "64Mi"}))
    proc = start_in(cg, ALLOCATE_200MIB)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert cg.oom_killed(128 + signal.SIGKILL)
    assert cg.oom_killed()  # the kernel's counter alone says so (v2, v1 on Linux >= 4.13)


def test_within_its_memory_limit_a_container_runs_to_completion(pod: PodCgroup) -> None:
    cg = pod.container("modest", 0, res({"memory": "64Mi"}))
    proc = start_in(cg, "x = b'x' * (16 << 20)\n")
    assert proc.wait(timeout=10) == 0
    assert not cg.oom_killed(0)


def _cpu_share(cg: ContainerCgroup, seconds: float) -> float:
    """Fraction of one core a busy loop in `cg` uses over `seconds` (cgroup usage deltas)."""
    proc = start_in(cg, BUSY_LOOP)
    try:
        used0, t0 = cg.cpu_usage_usec(), time.monotonic()
        assert used0 is not None, "no CPU usage counter for this cgroup"
        with pytest.raises(subprocess.TimeoutExpired):  # it must still be spinning
            proc.wait(timeout=seconds)
        used1, t1 = cg.cpu_usage_usec(), time.monotonic()
        assert used1 is not None
        return (used1 - used0) / ((t1 - t0) * 1e6)
    finally:
        proc.kill()
        proc.wait()


def test_a_cpu_limit_throttles_a_busy_loop(pod: PodCgroup) -> None:
    limited = _cpu_share(pod.container("spin", 0, res({"cpu": "200m"})), 1.5)
    free = _cpu_share(pod.container("spin", 1, Resources()), 1.5)
    print(f"busy loop: {limited:.1%} of a core under limits.cpu 200m, {free:.1%} without")
    assert limited <= 0.30
    assert free >= 0.5  # near 100% on an idle machine; leave room for a loaded CI host
    assert free > 2.5 * limited


def test_remove_kills_stragglers_and_leaves_no_directory(pod: PodCgroup) -> None:
    cg = pod.container("stuck", 0, Resources())
    proc = start_in(cg, "import time\ntime.sleep(60)\n")
    assert proc.pid in cg.pids()
    assert cg.remove()
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert not any(d.exists() for d in cg.unique_dirs())


def test_stale_cgroups_of_a_dead_podkit_are_cleaned(driver: CgroupDriver) -> None:
    dead = dataclasses.replace(driver, owner="999999999-1")  # no such pid: a killed run
    left = dead.pod(f"test-{uuid.uuid4()}")
    cg = left.container("orphan", 0, Resources())
    proc = start_in(cg, "import time\ntime.sleep(60)\n")
    mine = driver.pod(f"test-{uuid.uuid4()}")
    try:
        cleaned = cgroups.clean_stale(driver)
        for root in dict.fromkeys(driver.roots.values()):
            assert str(root / "999999999-1") in cleaned  # (and any a killed run left)
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert not any(d.exists() for d in left.dirs().values())
        assert all(d.exists() for d in mine.dirs().values())  # a live owner's pods stay
    finally:
        mine.remove()
        left.remove()


def test_the_launcher_puts_the_container_in_its_cgroup_before_exec(
    pod: PodCgroup, tmp_path: Path
) -> None:
    cg = pod.container("app", 0, res({"memory": "64Mi"}))
    bad = str(tmp_path / "missing" / "cgroup.procs")
    sandbox_pid, _, control = sandbox.fork_sandbox("cgpod", [])  # keep control: it keeps the pod
    try:
        results = []
        for procs in (cg.procs_files(), [bad]):
            spec = {
                "sandbox_pid": sandbox_pid,
                "scratch": str(tmp_path / f"rootfs{len(results)}"),
                "argv": [sys.executable, "-S", "-c", ALLOCATE_200MIB],
                "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                "cgroup_procs": procs,
            }
            launcher = Spawned()  # as podkit starts one: its spec goes over a pipe
            send_spec(launcher.spec_w, spec)
            with os.fdopen(launcher.status_r) as status:
                first = status.readline().strip()
            assert launcher.popen.wait(timeout=10) == 0
            # The container's PID 1 is the launcher's sibling: this test's child.
            pid = int(first.split()[1])
            results.append((first.replace(f" {pid} ", " PID ", 1), linux.wait_exit_code(pid)))
    finally:
        sandbox.stop_sandbox(sandbox_pid)
    (started, code), (error, bad_code) = results
    assert started.startswith("started ")
    assert code == 137  # 128 + SIGKILL, as Kubernetes reports an OOMKilled container
    assert cg.oom_killed(code)
    assert error == (
        f"error PID cgroup: cannot join {os.path.dirname(bad)}: No such file or directory"
    )
    assert bad_code == 128


def _writable_cgroup2() -> Path | None:
    """A cgroup2 mount we can create cgroups in, even without controllers (hybrid hosts)."""
    with open("/proc/self/mountinfo") as f:
        mounts = cgroups.parse_mountinfo(f.read())
    with open("/proc/self/cgroup") as f:
        own = cgroups.parse_proc_cgroup(f.read()).get("", "/")
    for m in mounts:
        base = Path(cgroups.own_dir(m, own))
        if m.fstype == "cgroup2" and "ro" not in m.options and os.access(base, os.W_OK):
            return base
    return None


def test_v2_mechanics_on_a_real_cgroup2_mount(driver: CgroupDriver) -> None:
    """The v2 path runs for real on a cgroup2 mount (here the controller-less unified mount
    beside v1): create, join, usage, cgroup.kill, remove (limits are covered above)."""
    base = _writable_cgroup2()
    assert base is not None, "no writable cgroup2 mount: the v2 mechanics cannot be shown"
    v2 = CgroupDriver(2, {"": base / f"podkit-test-{uuid.uuid4().hex[:8]}"}, controllers=())
    pod = v2.pod("uid")
    try:
        cg = pod.container("app", 0, res({"memory": "64Mi", "cpu": "1"}))
        assert cg.procs_files() == [str(v2.roots[""] / v2.owner / "uid/app-0/cgroup.procs")]
        proc = start_in(cg, BUSY_LOOP)
        assert proc.pid in cg.pids()
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)
        usage = cg.cpu_usage_usec()
        assert usage is not None and usage > 50_000
        assert not cg.oom_killed()
        assert cg.remove()  # cgroup.kill, then rmdir once the kill has landed
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        assert pod.remove()
    assert not v2.roots[""].exists()


DEVICE_TRIES = """
import os, stat, sys
for path, kind, major, minor in (("null", stat.S_IFCHR, 1, 3), ("loop", stat.S_IFBLK, 7, 0)):
    node = f"{sys.argv[1]}/{path}"
    os.mknod(node, 0o600 | kind, os.makedev(major, minor))
    try:
        os.close(os.open(node, os.O_RDONLY | os.O_NONBLOCK))
        print(path, "opened")
    except OSError as exc:
        print(path, exc.strerror)
"""


@pytest.mark.parametrize("version", [1, 2])
def test_the_device_allowlist_holds_on_v1_and_v2(
    version: int, driver: CgroupDriver, tmp_path: Path
) -> None:
    """v1: devices.deny/devices.allow; v2 (here the controller-less unified mount beside v1):
    the eBPF device program. Either way a made node of the standard set opens, a disk does
    not; a privileged container's cgroup lets it open."""
    if version == 1:
        assert "devices" in driver.controllers, "this machine kind has the v1 devices hierarchy"
        chosen = driver
    else:
        base = _writable_cgroup2()
        assert base is not None, "no writable cgroup2 mount: the v2 filter cannot be shown"
        chosen = CgroupDriver(2, {"": base / f"podkit-test-{uuid.uuid4().hex[:8]}"}, controllers=())
    pod = chosen.pod("uid")
    try:
        for name, all_devices, expected in (
            ("plain", False, "null opened\nloop Operation not permitted\n"),
            ("privileged", True, "null opened\nloop opened\n"),
        ):
            (tmp_path / name).mkdir()
            cg = pod.container(name, 0, res(), all_devices=all_devices)

            def join(cg: ContainerCgroup = cg) -> None:
                failure = launcher._join_cgroups(cg.procs_files())
                if failure:
                    raise OSError(failure)

            done = subprocess.run(
                [sys.executable, "-S", "-c", DEVICE_TRIES, str(tmp_path / name)],
                preexec_fn=join,
                capture_output=True,
                text=True,
                timeout=10,
            )
            assert done.stdout == expected, done.stderr
    finally:
        assert pod.remove()
