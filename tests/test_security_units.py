"""The pure parts of container isolation: capabilities, users, securityContext, seccomp
profiles, and a compiled filter loaded into a real (forked) process."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from podkit.manifest.security_checks import normalize_sysctl
from podkit.runtime import capabilities, linux, users
from podkit.runtime.cgroups import CgroupDriver, device_settings
from podkit.runtime.podfs import fs_group_mode
from podkit.runtime.seccomp_bpf import BpfFiles, compile_profile
from podkit.runtime.seccomp_profile import (
    Arg,
    Profile,
    ProfileError,
    Rule,
    parse_oci,
    runtime_default,
    runtime_default_key,
)
from podkit.runtime.security_context import effective, non_root_violation, sysctl_path

CAP = capabilities.NUMBERS


def test_capabilities_follow_containerds_add_and_drop_order() -> None:
    default, _ = capabilities.resolve([], [])
    assert capabilities.mask(default) == 0xA80425FB
    caps, unknown = capabilities.resolve(["net_admin", "CAP_SYS_TIME", "BOGUS"], ["chown"])
    assert caps == default - {CAP["CHOWN"]} | {CAP["NET_ADMIN"], CAP["SYS_TIME"]}
    assert unknown == ["BOGUS"]
    # ALL first, then single names: add ALL + drop one, drop ALL + add one.
    assert capabilities.resolve(["ALL"], ["CHOWN"])[0] == capabilities.ALL - {CAP["CHOWN"]}
    assert capabilities.resolve(["KILL"], ["all"])[0] == {CAP["KILL"]}
    assert capabilities.resolve(["ALL"], ["ALL"])[0] == frozenset()
    # privileged wins over add/drop.
    assert capabilities.resolve([], ["ALL"], privileged=True)[0] == capabilities.ALL
    assert capabilities.names({0, 5}) == ["CAP_CHOWN", "CAP_KILL"]


PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n# comment\n"
GROUP = "root:x:0:\napp:x:1000:\nwheel:x:10:root,app\naudio:x:29:app\nbroken\n"


def test_process_ids_read_passwd_and_group_as_containerd_does() -> None:
    # The user's own group from passwd, then the groups listing it, then supplemental groups.
    assert users.process_ids(1000, None, [5000], PASSWD, GROUP) == (1000, [1000, 10, 29, 5000])
    assert users.process_ids(1000, 3000, [], PASSWD, GROUP) == (3000, [3000, 10, 29])
    # A uid without an entry: group 0 and no memberships.
    assert users.process_ids(4242, None, [], PASSWD, GROUP) == (0, [0])
    assert users.process_ids(0, None, [], PASSWD, GROUP) == (0, [0, 10])
    assert users.process_ids(0, None, [], "", "") == (0, [0])


def test_effective_security_context_merges_pod_and_container() -> None:
    spec = {
        "securityContext": {
            "runAsUser": 1000,
            "runAsNonRoot": True,
            "fsGroup": 2000,
            "supplementalGroups": [3000],
            "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"},
        }
    }
    sec = effective(spec, {"securityContext": {"runAsUser": 1001}})
    assert (sec.run_as_user, sec.run_as_non_root) == (1001, True)
    assert sec.supplemental_groups == (2000, 3000)
    assert (sec.seccomp.type, sec.seccomp.localhost_profile, sec.seccomp.pod_level) == (
        "Localhost",
        "p.json",
        True,
    )
    own = effective(spec, {"securityContext": {"seccompProfile": {"type": "Unconfined"}}})
    assert (own.seccomp.type, own.seccomp.pod_level) == ("Unconfined", False)
    plain = effective({}, {})
    assert plain.seccomp.type == "RuntimeDefault" and not plain.no_new_privs
    assert "/proc/kcore" in plain.masked_paths and "/proc/sys" in plain.read_only_paths
    privileged = effective(spec, {"securityContext": {"privileged": True}})
    assert privileged.seccomp.type == "Unconfined"
    assert privileged.masked_paths == privileged.read_only_paths == ()
    assert privileged.capabilities == capabilities.ALL
    nnp = effective({}, {"securityContext": {"allowPrivilegeEscalation": False}})
    assert nnp.no_new_privs


def test_run_as_non_root_messages_are_the_kubelets() -> None:
    pod, which = "p_default(u)", '(pod: "p_default(u)", container: c)'

    def check(pod_sc: dict, sc: dict, uid: int | None = None, user: str = "") -> str | None:
        sec = effective({"securityContext": pod_sc}, {"securityContext": sc})
        return non_root_violation(sec, uid, user, pod, "c")

    assert check({}, {}) is None  # not asked for
    assert check({"runAsNonRoot": True}, {"runAsUser": 5}) is None
    assert check({"runAsNonRoot": True}, {"runAsUser": 0}) == (
        f"container's runAsUser breaks non-root policy {which}"
    )
    assert check({"runAsNonRoot": True}, {}) == (
        f"container has runAsNonRoot and image will run as root {which}"
    )
    assert check({}, {"runAsNonRoot": True}, uid=7) is None  # the image's own user
    assert check({}, {"runAsNonRoot": True}, user="www") == (
        "container has runAsNonRoot and image has non-numeric user (www), cannot verify user "
        f"is non-root {which}"
    )


def test_sysctl_names_and_paths() -> None:
    assert normalize_sysctl("net.ipv4.ip_forward") == "net.ipv4.ip_forward"
    assert normalize_sysctl("net/ipv4/conf/eth0.100/rp_filter") == (
        "net.ipv4.conf.eth0/100.rp_filter"
    )
    assert sysctl_path("net.ipv4.conf.eth0/100.rp_filter") == (
        "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
    )


def test_fs_group_modes_are_the_kubelets() -> None:
    assert oct(fs_group_mode(0o777, is_dir=True, read_only=False)) == "0o2777"
    assert oct(fs_group_mode(0o600, is_dir=False, read_only=False)) == "0o660"
    assert oct(fs_group_mode(0o755, is_dir=True, read_only=True)) == "0o2755"
    assert oct(fs_group_mode(0o400, is_dir=False, read_only=True)) == "0o440"


def test_device_allowlist_and_cgroup_mounts() -> None:
    rules = [(s.file, s.value) for s in device_settings(all_devices=False)]
    assert rules[0] == ("devices.deny", "a")  # deny everything, then the standard devices
    assert ("devices.allow", "c 1:3 rwm") in rules and ("devices.allow", "b *:* m") in rules
    assert device_settings(all_devices=True) == []
    v1 = CgroupDriver(
        1,
        {"cpu": Path("/c/cpu"), "cpuacct": Path("/c/cpu"), "memory": Path("/c/m")},
        hierarchies={"cpu": "cpu,cpuacct", "cpuacct": "cpu,cpuacct", "memory": "memory"},
        owner="1-1",
    )
    assert v1.mounts() == [
        ["cpu,cpuacct", "cgroup", "cpu,cpuacct"],
        ["memory", "cgroup", "memory"],
    ]
    assert CgroupDriver(2, {"": Path("/c")}, owner="1-1").mounts() == [["", "cgroup2", ""]]


def test_runtime_default_depends_on_the_capabilities() -> None:
    def allowed(profile: Profile) -> set[str]:
        return {n for r in profile.rules if r.action == "SCMP_ACT_ALLOW" for n in r.names}

    plain = runtime_default(capabilities.DEFAULT, machine="x86_64")
    assert plain.architectures == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
    assert {"read", "clone", "chroot", "arch_prctl"} <= allowed(plain)
    assert not {"mount", "unshare", "setns", "init_module", "keyctl", "bpf"} & allowed(plain)
    clone = next(r for r in plain.rules if r.names == ("clone",))
    assert clone.args[0].op == "SCMP_CMP_MASKED_EQ" and clone.args[0].value_two == 0
    admin = runtime_default(capabilities.DEFAULT | {CAP["SYS_ADMIN"]}, machine="x86_64")
    assert {"mount", "unshare", "setns", "clone3"} <= allowed(admin)
    assert not any(r.names == ("clone3",) for r in admin.rules if r.action != "SCMP_ACT_ALLOW")
    assert "chroot" not in allowed(runtime_default(frozenset(), machine="x86_64"))


def test_localhost_profiles_are_parsed_with_their_field_named() -> None:
    text = json.dumps(
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {
                    "names": ["personality"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}],
                },
            ],
        }
    )
    p = parse_oci(text, "p.json")
    assert p.default_errno == 38 and p.flags == ("SECCOMP_FILTER_FLAG_LOG",)
    assert p.rules[1] == Rule(("personality",), "SCMP_ACT_ALLOW", None, (Arg(0, 8),))
    for bad, message in (
        ("{", "p.json: not valid JSON"),
        ("[]", "p.json: must be a JSON object"),
        ("{}", "p.json: defaultAction: required"),
        ('{"defaultAction": "ALLOW"}', "p.json: defaultAction: 'ALLOW' is not one of"),
        (
            '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "x"}]}',
            "p.json: syscalls[0].names: must be a non-empty list",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], '
            '"action": "SCMP_ACT_ALLOW", "args": [{"index": 9, "op": "SCMP_CMP_EQ"}]}]}',
            "p.json: syscalls[0].args[0].index: must be a whole number from 0 to 5",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}',
            "p.json: listenerPath: SCMP_ACT_NOTIFY agents are not supported",
        ),
    ):
        with pytest.raises(ProfileError) as info:
            parse_oci(bad, "p.json")
        assert str(info.value).startswith(message), str(info.value)


def _in_child(program: bytes, action: str) -> int:
    """Fork, load `program`, then do `action`; the child's exit status says what happened:
    0 allowed, else the errno it got."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
            linux.load_seccomp(program)
            if action == "mkdir":
                os.mkdir(f"/tmp/podkit-seccomp-{os.getpid()}")
                os.rmdir(f"/tmp/podkit-seccomp-{os.getpid()}")
            elif action == "unshare":
                linux.unshare(linux.CLONE_NEWUTS)
            elif action == "getpid":
                os.getpid()
        except OSError as exc:
            code = exc.errno or 255
        except BaseException:  # noqa: BLE001 - never return into pytest from the child
            code = 255
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_compiled_filter_allows_and_refuses_in_a_real_process() -> None:
    default = compile_profile(runtime_default(capabilities.DEFAULT))
    assert len(default) % 8 == 0 and len(default) > 8 * 300
    assert _in_child(default, "getpid") == 0
    assert _in_child(default, "mkdir") == 0
    assert _in_child(default, "unshare") == errno.EPERM  # needs CAP_SYS_ADMIN
    no_mkdir = Profile(
        "SCMP_ACT_ALLOW", (Rule(("mkdir", "mkdirat"), "SCMP_ACT_ERRNO", errno.EACCES),)
    )
    assert _in_child(compile_profile(no_mkdir), "mkdir") == errno.EACCES


def test_compiled_programs_are_kept_by_profile(tmp_path: Path) -> None:
    built: list[frozenset[int]] = []

    def path(files: BpfFiles, caps: frozenset[int]) -> str:
        def profile() -> Profile:
            built.append(caps)
            return runtime_default(caps)

        return files.path(runtime_default_key(caps), profile)

    files = BpfFiles(tmp_path / "seccomp")
    a = path(files, capabilities.DEFAULT)
    assert a == path(files, capabilities.DEFAULT)
    assert a != path(files, frozenset())
    assert built == [capabilities.DEFAULT, frozenset()]  # each profile built once
    assert len(list((tmp_path / "seccomp").iterdir())) == 2
    # A later run finds the file and builds nothing.
    assert path(BpfFiles(tmp_path / "seccomp"), capabilities.DEFAULT) == a
    assert len(built) == 2
