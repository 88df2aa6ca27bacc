"""Escape tests: a container that podkit runs as root must not be able to take over the host.

Each attempt runs in a real pod as root and asserts that it fails and that the host is unchanged.
Each was seen to succeed on podkit before the container isolation (issue 13), except where this
machine's kernel refuses it by itself, as the comments say: it has no /proc/kcore and no
/proc/sysrq-trigger, no loadable modules, and a chrooted process may not make a user namespace.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podkit_harness import REPO, Podkit, wait_for, write_manifest

# Run inside the container: one JSON line per attempt, {"case", "ok", "errno" | "detail"}.
ATTEMPTS = textwrap.dedent(
    r"""
    import ctypes, errno, json, os, stat, sys, tempfile
    libc = ctypes.CDLL(None, use_errno=True)
    out = sys.argv[1]  # a host directory, shown in the container as a volume and read-through

    def report(case, fn):
        try:
            detail = fn()
        except OSError as exc:
            line = {"case": case, "ok": False, "errno": errno.errorcode.get(exc.errno)}
        else:
            line = {"case": case, "ok": True, "detail": detail}
        print(json.dumps(line), flush=True)

    def check(rc):
        if rc < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return rc

    def rewrite(path):  # write back what is there: harmless if it ever got through
        with open(path) as f:
            value = f.read()
        with open(path, "w") as f:
            f.write(value)

    def device(name, kind, major, minor):
        path = f"{tempfile.mkdtemp()}/{name}"  # the view of the host's /tmp may hold the name
        os.mknod(path, 0o600 | kind, os.makedev(major, minor))
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))

    def read(path):
        with open(path, "rb") as f:
            return len(f.read())

    def cgroup_v1():
        os.makedirs("/tmp/cg", exist_ok=True)
        check(libc.mount(b"cgroup", b"/tmp/cg", b"cgroup", 0, b"memory"))
        with open("/tmp/cg/release_agent", "w") as f:
            f.write("/tmp/payload")

    def climb():  # chroot into a subdirectory, climb out of it, and write on the host
        os.makedirs("/tmp/jail", exist_ok=True)
        top = os.open("/", os.O_RDONLY)
        os.chroot("/tmp/jail")
        os.fchdir(top)
        for _ in range(64):
            os.chdir("..")
        os.chroot(".")
        with open(f"{out}/climbed", "w") as f:
            f.write("out")

    def status():
        with open("/proc/self/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)

    root_major, root_minor = int(sys.argv[2]), int(sys.argv[3])
    report("status", status)
    report("core_pattern", lambda: rewrite("/proc/sys/kernel/core_pattern"))
    report("sysrq_trigger", lambda: open("/proc/sysrq-trigger", "w").write("h"))
    report("ksm_run", lambda: rewrite("/sys/kernel/mm/ksm/run"))
    report("release_agent", lambda: rewrite("/sys/fs/cgroup/memory/release_agent"))
    report("own_cgroup", lambda: rewrite("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
    for path in sys.argv[4:]:
        report(f"read {path}", lambda: read(path))
    report("mknod_root_disk", lambda: device("disk", stat.S_IFBLK, root_major, root_minor))
    report("mknod_loop", lambda: device("loop", stat.S_IFBLK, 7, 0))
    report("mknod_kmsg", lambda: device("kmsg", stat.S_IFCHR, 1, 11))
    report("cgroup_v1_mount", cgroup_v1)
    report("init_module", lambda: check(libc.syscall(175, b"", 0, b"")))
    report("unshare_user", lambda: check(libc.syscall(272, 0x10000000)))
    report("ptrace_pause", lambda: check(libc.syscall(101, 16, 1, 0, 0)))  # PTRACE_ATTACH pid 1
    report("pause_root", lambda: os.listdir("/proc/1/root/"))
    report("keyctl", lambda: check(libc.syscall(250, 1, None)))  # KEYCTL_JOIN_SESSION_KEYRING
    report("mount_root", lambda: check(libc.mount(b"/", b"/mnt", None, 0x1000, None)))
    report("chroot_climb", climb)
    """
)

# containerd's default capabilities: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
# NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP, as /proc/PID/status shows them.
DEFAULT_CAPS = "00000000a80425fb"


def _host_masked_files() -> list[str]:
    """containerd's masked paths that are files on this kernel (kcore, sched_debug... may not)."""
    from podkit.runtime.security_context import MASKED_PATHS

    return [p for p in MASKED_PATHS if os.path.isfile(p)]


@pytest.fixture(scope="module")
def attempts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    """One pod, run once for the module: every attempt's outcome, and the host's state before.

    shareProcessNamespace puts the pod's pause process (root, every capability) at PID 1 of the
    container's PID namespace, the process to attack with ptrace and /proc/1/root."""
    tmp = tmp_path_factory.mktemp("isolation")
    (tmp / "out").mkdir()
    script = tmp / "attempts.py"
    script.write_text(ATTEMPTS)
    root_dev = os.stat("/").st_dev
    args = [str(tmp / "out"), str(os.major(root_dev)), str(os.minor(root_dev))]
    args += _host_masked_files()
    manifest = write_manifest(
        tmp,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: escape}}
        spec:
          restartPolicy: Never
          shareProcessNamespace: true
          containers:
          - name: attacker
            image: busybox
            command: {json.dumps(["python3", str(script), *args])}
        """,
    )
    with open("/proc/sys/kernel/core_pattern") as f:
        core_pattern = f.read()
    run = Podkit("run", manifest, state_dir=tmp / "state")
    try:
        assert run.wait(60) == 0, run.text()
    finally:
        run.kill()
    results = {e["case"]: e for e in run.events("attacker") if "case" in e}
    with open("/proc/sys/kernel/core_pattern") as f:
        assert f.read() == core_pattern  # the host is unchanged
    results["_host"] = {"out": tmp / "out"}
    yield results


def _refused(result: dict[str, Any], *errnos: str) -> None:
    assert result["ok"] is False, result
    assert result["errno"] in errnos, result


def test_the_host_kernel_settings_cannot_be_written(attempts: dict[str, dict[str, Any]]) -> None:
    _refused(attempts["core_pattern"], "EROFS")  # /proc/sys is read-only
    _refused(attempts["ksm_run"], "EROFS")  # /sys is read-only
    # No /proc/sysrq-trigger on this kernel (CONFIG_MAGIC_SYSRQ off): ENOENT, on others EROFS.
    _refused(attempts["sysrq_trigger"], "EROFS", "ENOENT")


def test_masked_proc_files_read_as_empty(attempts: dict[str, dict[str, Any]]) -> None:
    masked = [case for case in attempts if case.startswith("read ")]
    assert "read /proc/keys" in masked  # at least the keyring list exists on this kernel
    for case in masked:
        assert attempts[case] == {"case": case, "ok": True, "detail": 0}, attempts[case]


def test_a_device_node_made_with_mknod_cannot_be_opened(
    attempts: dict[str, dict[str, Any]],
) -> None:
    # mknod itself is allowed (containerd, runc and Docker allow it); opening is not: the devices
    # cgroup. Before, the loop disk and the kernel log opened. This machine refuses its root
    # disk even to the host's root, so that case shows the same refusal, not the change.
    for case in ("mknod_root_disk", "mknod_loop", "mknod_kmsg"):
        _refused(attempts[case], "EPERM")


def test_the_cgroup_release_agent_escape_is_closed(attempts: dict[str, dict[str, Any]]) -> None:
    _refused(attempts["cgroup_v1_mount"], "EPERM")
    # /sys/fs/cgroup shows the container's own cgroups, read-only: no hierarchy root, so no
    # release_agent (before, the host's hierarchies were there, writable).
    _refused(attempts["release_agent"], "ENOENT", "EROFS")
    _refused(attempts["own_cgroup"], "EROFS")


def test_no_kernel_modules_keys_or_mounts(attempts: dict[str, dict[str, Any]]) -> None:
    # init_module: seccomp says EPERM; before, this kernel (no modules) said ENOSYS.
    _refused(attempts["init_module"], "EPERM")
    _refused(attempts["keyctl"], "EPERM")
    _refused(attempts["mount_root"], "EPERM")


def test_no_capabilities_back_through_a_user_namespace(
    attempts: dict[str, dict[str, Any]],
) -> None:
    # seccomp refuses unshare without CAP_SYS_ADMIN (the kernel also refuses a user namespace
    # to a chrooted process, which a container before this change was).
    _refused(attempts["unshare_user"], "EPERM")


def test_the_pods_pause_process_cannot_be_traced_or_entered(
    attempts: dict[str, dict[str, Any]],
) -> None:
    # ptrace itself is allowed, as by Docker's and containerd's profiles on kernels >= 4.8; a
    # process with more capabilities than the tracer is not (no CAP_SYS_PTRACE).
    _refused(attempts["ptrace_pause"], "EPERM")
    _refused(attempts["pause_root"], "EACCES", "EPERM")


def test_chroot_and_climb_stays_inside_the_container(
    attempts: dict[str, dict[str, Any]],
) -> None:
    # CAP_SYS_CHROOT is in the default set; the root is the mount namespace's own (pivot_root),
    # so the climb ends there. Before, it ended at the host's root and wrote the file.
    assert attempts["chroot_climb"]["ok"] is True  # it ran, inside
    assert not (attempts["_host"]["out"] / "climbed").exists()


def test_a_container_has_the_default_capabilities_and_seccomp(
    attempts: dict[str, dict[str, Any]],
) -> None:
    status = attempts["status"]["detail"]
    for key in ("CapBnd", "CapPrm", "CapEff"):
        assert status[key] == DEFAULT_CAPS, status
    assert status["CapInh"] == status["CapAmb"] == "0000000000000000"
    assert status["Seccomp"] == "2"  # filter mode
    assert status["NoNewPrivs"] == "0"  # Kubernetes' default: allowPrivilegeEscalation true


# ---------------------------------------------------------------------------- securityContext


def _status_of(run: Podkit, container: str) -> dict[str, str]:
    lines = run.stdout_lines(f"[{container}] ")
    return dict(
        line.split("] ", 1)[1].split(":\t", 1) for line in lines if ":\t" in line.split("] ", 1)[1]
    )


def test_capabilities_add_drop_and_privileged(tmp_path: Path, podkit: Any) -> None:
    show = '["sh", "-c", "grep -E \'^(Cap|Seccomp|NoNewPrivs)\' /proc/self/status"]'
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: caps}}
        spec:
          restartPolicy: Never
          containers:
          - name: add
            image: busybox
            command: {show}
            securityContext: {{capabilities: {{add: [NET_ADMIN, cap_sys_time]}}}}
          - name: drop
            image: busybox
            command: {show}
            securityContext: {{capabilities: {{drop: [ALL]}}}}
          - name: some
            image: busybox
            command: {show}
            securityContext: {{capabilities: {{drop: [ALL], add: [CHOWN]}}}}
          - name: privileged
            image: busybox
            command: {show}
            securityContext: {{privileged: true}}
        """,
    )
    run = podkit("run", m)
    assert run.wait(30) == 0, run.text()
    added = 0xA80425FB | 1 << 12 | 1 << 25  # NET_ADMIN, SYS_TIME
    assert _status_of(run, "add")["CapEff"] == f"{added:016x}"
    assert _status_of(run, "drop")["CapEff"] == "0000000000000000"
    assert _status_of(run, "drop")["CapBnd"] == "0000000000000000"
    assert _status_of(run, "some")["CapEff"] == f"{1:016x}"
    with open("/proc/self/status") as f:
        host = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    privileged = _status_of(run, "privileged")
    assert privileged["CapEff"] == privileged["CapBnd"] == host["CapBnd"]
    assert privileged["Seccomp"] == "0"  # the kubelet runs privileged containers unconfined


def test_privileged_lifts_the_read_only_proc_and_sys(tmp_path: Path, podkit: Any) -> None:
    script = (
        'awk \'$5 == "/proc/sys" || $5 == "/sys" {print $5, $6}\' /proc/self/mountinfo; '
        "if test -e /dev/loop0; then echo host-devices; fi"
    )
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: priv}}
        spec:
          restartPolicy: Never
          containers:
          - name: plain
            image: busybox
            command: ["sh", "-c", {json.dumps(script)}]
          - name: privileged
            image: busybox
            command: ["sh", "-c", {json.dumps(script)}]
            securityContext: {{privileged: true}}
        """,
    )
    run = podkit("run", m)
    assert run.wait(30) == 0, run.text()
    plain = run.stdout_lines("[plain] ")
    assert any(line.startswith("[plain] /proc/sys ro,") for line in plain), plain
    assert any(line.startswith("[plain] /sys ro,") for line in plain), plain
    assert "[plain] host-devices" not in plain
    privileged = run.stdout_lines("[privileged] ")
    assert not any("/proc/sys" in line for line in privileged), privileged  # not masked
    assert any(line.startswith("[privileged] /sys rw,") for line in privileged), privileged
    assert "[privileged] host-devices" in privileged


def test_no_new_privs_stops_a_setuid_binary(tmp_path: Path, podkit: Any) -> None:
    m = write_manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: setuid}
        spec:
          restartPolicy: Never
          initContainers:
          - name: plant
            image: busybox
            command: ["sh", "-c", "cp /usr/bin/id /shared/id && chmod 4755 /shared/id"]
            volumeMounts: [{name: shared, mountPath: /shared}]
          containers:
          - name: escalates
            image: busybox
            command: ["/shared/id", "-u"]
            securityContext: {runAsUser: 1000}
            volumeMounts: [{name: shared, mountPath: /shared}]
          - name: confined
            image: busybox
            command: ["/shared/id", "-u"]
            securityContext: {runAsUser: 1000, allowPrivilegeEscalation: false}
            volumeMounts: [{name: shared, mountPath: /shared}]
          volumes: [{name: shared, emptyDir: {}}]
        """,
    )
    run = podkit("run", m)
    assert run.wait(30) == 0, run.text()
    assert run.stdout_lines("[escalates] ") == ["[escalates] 0"]  # the setuid bit worked
    assert run.stdout_lines("[confined] ") == ["[confined] 1000"]


def test_run_as_non_root_refuses_a_root_user(tmp_path: Path, podkit: Any) -> None:
    m = write_manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: nonroot, uid: 1b4e28ba-2fa1-11d2-883f-0016d3cca427}
        spec:
          securityContext: {runAsNonRoot: true}
          containers:
          - name: root
            image: busybox
            command: ["sleep", "60"]
          - name: user
            image: busybox
            command: ["sh", "-c", "id -u; exec sleep 60"]
            securityContext: {runAsUser: 1000}
          - name: explicit-root
            image: busybox
            command: ["sleep", "60"]
            securityContext: {runAsUser: 0}
        """,
    )
    run = podkit("run", m, "--grace", "1")
    wait_for("the user container's output", lambda: run.stdout_lines("[user] "), 20)
    assert run.stdout_lines("[user] ") == ["[user] 1000"]
    pod = "nonroot_default(1b4e28ba-2fa1-11d2-883f-0016d3cca427)"

    def waiting(name: str) -> dict[str, Any] | None:
        statuses = run.status()["status"]["containerStatuses"]
        state = next(s for s in statuses if s["name"] == name)["state"]
        return state.get("waiting") if state.get("waiting", {}).get("message") else None

    root = wait_for("the root container refused", lambda: waiting("root"), 20)
    assert root == {
        "reason": "CreateContainerConfigError",
        "message": f'container has runAsNonRoot and image will run as root (pod: "{pod}", '
        "container: root)",
    }
    explicit = wait_for("the explicit root refused", lambda: waiting("explicit-root"), 20)
    assert explicit["message"] == (
        f'container\'s runAsUser breaks non-root policy (pod: "{pod}", container: explicit-root)'
    )
    assert run.stop() == 0


def test_users_groups_and_fs_group_on_volumes(tmp_path: Path, podkit: Any) -> None:
    m = write_manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: groups}
        spec:
          restartPolicy: Never
          securityContext:
            runAsUser: 1000
            runAsGroup: 3000
            supplementalGroups: [4000]
            fsGroup: 2000
          containers:
          - name: c
            image: busybox
            command:
            - sh
            - -c
            - |
              id -u; id -g; id -G
              echo data > /data/file && stat -c '%g %a' /data /data/file
              stat -L -c '%g' /config/key
            volumeMounts: [{name: data, mountPath: /data}, {name: config, mountPath: /config}]
          volumes:
          - {name: data, emptyDir: {}}
          - {name: config, configMap: {name: settings}}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: settings}
        data: {key: value}
        """,
    )
    run = podkit("run", m)
    assert run.wait(30) == 0, run.text()
    assert run.stdout_lines("[c] ") == [
        "[c] 1000",
        "[c] 3000",
        "[c] 3000 2000 4000",  # runAsGroup, then fsGroup and supplementalGroups
        "[c] 2000 2777",  # the emptyDir belongs to the fsGroup, setgid: new files inherit it
        "[c] 2000 644",
        "[c] 2000",
    ]


def test_read_only_root_filesystem(tmp_path: Path, podkit: Any) -> None:
    m = write_manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: readonly}
        spec:
          restartPolicy: Never
          containers:
          - name: c
            image: busybox
            command:
            - sh
            - -c
            - |
              touch /etc/podkit-test 2>&1 || true
              touch /data/ok && echo volume-written
            securityContext: {readOnlyRootFilesystem: true}
            volumeMounts: [{name: data, mountPath: /data}]
          volumes: [{name: data, emptyDir: {}}]
        """,
    )
    run = podkit("run", m)
    assert run.wait(30) == 0, run.text()
    lines = run.stdout_lines("[c] ")
    assert lines[0].endswith("Read-only file system"), lines
    assert lines[1] == "[c] volume-written"


# ----------------------------------------------------------------------------------- seccomp

MKDIR_DENIED = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
    ],
}


def test_localhost_and_unconfined_seccomp_profiles(tmp_path: Path, podkit: Any) -> None:
    profiles = tmp_path / "profiles"
    (profiles / "team").mkdir(parents=True)
    (profiles / "team" / "no-mkdir.json").write_text(json.dumps(MKDIR_DENIED))
    script = '["sh", "-c", "grep ^Seccomp: /proc/self/status; mkdir /tmp/d 2>&1 || true"]'
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: profiles}}
        spec:
          restartPolicy: Never
          securityContext:
            seccompProfile: {{type: Localhost, localhostProfile: team/no-mkdir.json}}
          containers:
          - name: local
            image: busybox
            command: {script}
          - name: unconfined
            image: busybox
            command: {script}
            securityContext: {{seccompProfile: {{type: Unconfined}}}}
          - name: default
            image: busybox
            command: {script}
            securityContext: {{seccompProfile: {{type: RuntimeDefault}}}}
        """,
    )
    run = podkit("run", m, "--seccomp-profile-root", str(profiles))
    assert run.wait(30) == 0, run.text()
    local = run.stdout_lines("[local] ")
    assert local[0] == "[local] Seccomp:\t2"
    assert local[1].endswith("Permission denied"), local  # errnoRet 13: EACCES
    assert run.stdout_lines("[unconfined] ") == ["[unconfined] Seccomp:\t0"]
    assert run.stdout_lines("[default] ") == ["[default] Seccomp:\t2"]  # mkdir is allowed


def _bad_run(tmp_path: Path, podkit: Any, spec: str, *args: str) -> list[str]:
    """podkit run of a pod whose spec is `spec`: it must refuse it with exit 2, starting
    nothing; returns the error lines."""
    m = write_manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: bad}
        spec:
          restartPolicy: Never
        """
        + textwrap.indent(textwrap.dedent(spec), " " * 10),
    )
    run = podkit("run", m, *args)
    assert run.wait(30) == 2, run.text()
    assert not (tmp_path / "state" / "pods").exists()  # nothing was started
    return [line for line in run.err if line.startswith("error:")]


def test_a_missing_or_broken_localhost_profile_is_refused_before_anything_starts(
    tmp_path: Path, podkit: Any
) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "broken.json").write_text(
        json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"]}]})
    )
    spec = """
    containers:
    - name: c
      image: busybox
      command: ["true"]
      securityContext:
        seccompProfile: {type: Localhost, localhostProfile: PROFILE}
    """
    missing = _bad_run(
        tmp_path,
        podkit,
        spec.replace("PROFILE", "nope.json"),
        "--seccomp-profile-root",
        str(profiles),
    )
    assert len(missing) == 1
    assert "pod.yaml (document 1): pod bad: spec.containers[0].securityContext" in missing[0]
    assert f"seccomp profile {profiles}/nope.json: No such file or directory" in missing[0]
    broken = _bad_run(
        tmp_path,
        podkit,
        spec.replace("PROFILE", "broken.json"),
        "--seccomp-profile-root",
        str(profiles),
    )
    assert f"{profiles}/broken.json: syscalls[0].action: None is not one of" in broken[0]


def test_unsafe_sysctls_and_contradictions_are_refused(tmp_path: Path, podkit: Any) -> None:
    errors = _bad_run(
        tmp_path,
        podkit,
        """
        securityContext:
          sysctls:
          - {name: kernel.msgmax, value: "65536"}
          - {name: net.ipv4.ip_local_port_range, value: "20000 30000"}
          - {name: net/ipv4/ip_local_port_range, value: "20000 30000"}
        containers:
        - name: c
          image: busybox
          command: ["true"]
          securityContext:
            privileged: true
            allowPrivilegeEscalation: false
            seccompProfile: {type: Localhost}
        """,
    )
    assert len(errors) == 4, errors
    forbidden, duplicate, contradiction, localhost = errors
    assert "spec.securityContext.sysctls[0].name (line " in forbidden
    assert 'forbidden sysctl: "kernel.msgmax" not allowlisted' in forbidden
    assert "spec.securityContext.sysctls[2].name (line " in duplicate
    assert 'Duplicate value: "net/ipv4/ip_local_port_range"' in duplicate
    assert "spec.containers[0].securityContext (line " in contradiction
    assert "cannot set `allowPrivilegeEscalation` to false and `privileged` to true" in (
        contradiction
    )
    assert "spec.containers[0].securityContext.seccompProfile.localhostProfile" in localhost
    assert "must be set when seccomp type is Localhost" in localhost


def test_safe_sysctls_are_the_pods_own(tmp_path: Path, podkit: Any) -> None:
    path = "/proc/sys/net/ipv4/ip_local_port_range"
    with open(path) as f:
        host = f.read()
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: tuned}}
        spec:
          restartPolicy: Never
          securityContext:
            sysctls:
            - {{name: net.ipv4.ip_local_port_range, value: "20000 30000"}}
            - {{name: net/ipv4/tcp_keepalive_time, value: "600"}}
          containers:
          - name: c
            image: busybox
            command: ["cat", "{path}", "/proc/sys/net/ipv4/tcp_keepalive_time"]
        """,
    )
    run = podkit("run", m)
    assert run.wait(30) == 0, run.text()
    assert run.stdout_lines("[c] ") == ["[c] 20000\t30000", "[c] 600"]
    with open(path) as f:
        assert f.read() == host  # the host's own is untouched


# ------------------------------------------------------- what enters a container: exec, hooks

SHOW_SELF = (
    'echo "$(id -u) $(grep -E "^(CapEff|Seccomp|NoNewPrivs):" /proc/self/status | '
    "tr -s '\\t\\n' '  ')$(grep :memory: /proc/self/cgroup | cut -d: -f2-)\""
)


def test_exec_probes_and_hooks_run_under_the_containers_confinement(
    tmp_path: Path, podkit: Any
) -> None:
    wait_hook = "until [ -s /tmp/hook ]; do sleep 0.1; done; cat /tmp/hook; exec sleep 60"
    hook = json.dumps(SHOW_SELF + " > /tmp/hook")
    probe = json.dumps(SHOW_SELF + "; exit 1")
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: probed}}
        spec:
          containers:
          - name: c
            image: busybox
            command: ["sh", "-c", "{wait_hook}"]
            securityContext:
              allowPrivilegeEscalation: false
              capabilities: {{drop: [ALL], add: [KILL]}}
            lifecycle:
              postStart: {{exec: {{command: ["sh", "-c", {hook}]}}}}
            readinessProbe:
              exec: {{command: ["sh", "-c", {probe}]}}
              periodSeconds: 1
        """,
    )
    run = podkit("run", m, "--grace", "1")
    # root, with only CAP_KILL, no_new_privs, seccomp, and in the container's memory cgroup (the
    # root of its cgroup namespace). Before, a hook or probe had every capability and no filter.
    expected = "0 CapEff: 0000000000000020 NoNewPrivs: 1 Seccomp: 2 memory:/"
    shown = wait_for("the hook's report", lambda: run.stdout_lines("[c] "), 20)
    assert shown == [f"[c] {expected}"]
    event = wait_for(
        "the failed probe's event",
        lambda: next((x for x in list(run.err) if "Readiness probe failed" in x), None),
        20,
    )
    assert event.endswith(f"Readiness probe failed: {expected}"), event
    assert run.stop() == 0


def test_the_escape_example_is_refused_everything(podkit: Any) -> None:
    run = podkit("run", str(REPO / "examples" / "escape-attempts.yaml"))
    assert run.wait(30) == 0, run.text()
    lines = run.stdout_lines("[attacker] ")
    assert len(lines) == 7, lines
    assert not [line for line in lines if "SUCCEEDED" in line], lines
    assert lines[0] == (
        "[attacker] core_pattern: [Errno 30] Read-only file system: '/proc/sys/kernel/core_pattern'"
    )


def test_what_is_not_implemented_or_unknown_is_named_in_warnings(
    tmp_path: Path, podkit: Any
) -> None:
    m = write_manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: warned}
        spec:
          restartPolicy: Never
          containers:
          - name: c
            image: busybox
            command: ["true"]
            securityContext:
              procMount: Unmasked
              capabilities: {add: [NOT_A_CAP]}
          - name: d
            image: busybox
            command: ["true"]
            securityContext: {procMount: Default}
        """,
    )
    run = podkit("run", m)
    assert run.wait(30) == 0, run.text()
    warnings = [line for line in run.err if line.startswith("warning:")]
    assert len(warnings) == 2, warnings
    # Unmasked is named; Default, which is what podkit does, is not.
    assert warnings[0].endswith("are ignored: spec.containers[0].securityContext.procMount")
    assert warnings[1].endswith(
        "pod warned: spec.containers[0].securityContext.capabilities: no such capability, "
        "ignored: NOT_A_CAP"
    )
