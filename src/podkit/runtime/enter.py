"""Run a command inside a running container, as exec probes and lifecycle hooks do (runc exec):
`enter SPEC_FD`; podkit writes the spec into the pipe (send_spec).

The helper joins the container's cgroups, then its namespaces (user first when rootless, then
cgroup, IPC, UTS, network, PID, mount), its root and working directory; it forks, since a PID
namespace is entered by children only, and the child confines itself exactly as the container's
PID 1 did (confine.py: seccomp, capabilities, user, no_new_privs) before it execs the command.
The helper waits and exits with the command's status (128 + signal when killed). Errors before
the exec go to stderr with status 127 (126 when the command cannot be executed).
"""

from __future__ import annotations

import fcntl
import marshal
import os
import signal
import sys
import termios  # a C extension: imported now, before the chroot puts it out of reach

from podkit.runtime import linux
from podkit.runtime.confine import Confinement

TYPE_CHECKING = False  # a helper's start: typing stays out of it
if TYPE_CHECKING:
    from typing import Any


def send_spec(fd: int, spec: dict[str, Any]) -> None:
    """Writes a helper's spec into its pipe and closes it. It holds the container's
    environment, secrets included: a pipe, never a file. marshal (built into the interpreter)
    keeps json and re out of the helper's start; both ends are this same Python."""
    with os.fdopen(fd, "wb") as f:
        f.write(marshal.dumps(spec))


def enter_spec(
    pid: int,
    argv: list[str],
    env: dict[str, str],
    confinement: Confinement,
    cgroup_procs: list[str],
) -> dict[str, Any]:
    return {
        "pid": pid,
        "argv": argv,
        "env": env,
        "confinement": confinement.to_json(),
        "cgroup_procs": cgroup_procs,
    }


# The order nsenter uses: the user namespace first (rights in the others come from it), mount
# last (after it, /proc/<pid> may no longer be the host's).
_NAMESPACES = ("cgroup", "ipc", "uts", "net", "pid", "mnt")


def _fail(message: str, code: int = 127) -> int:
    os.write(2, f"podkit exec: {message}\n".encode())
    return code


def run(spec: dict[str, Any]) -> int:
    pid = int(spec["pid"])
    argv, env = list(spec["argv"]), dict(spec["env"])
    confinement = Confinement.from_json(spec["confinement"])
    try:
        for path in spec["cgroup_procs"]:
            with open(path, "w") as f:
                f.write("0")
        confinement.read_program()
        names = list(_NAMESPACES)
        if os.stat(f"/proc/{pid}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino:
            names.insert(0, "user")  # rootless: the pod's user namespace holds our rights
        fds = [
            os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY)
            for ns in names
            if os.stat(f"/proc/{pid}/ns/{ns}").st_ino != os.stat(f"/proc/self/ns/{ns}").st_ino
        ]
        root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY)
        cwd = os.open(f"/proc/{pid}/cwd", os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return _fail(f"container process {pid} is not running")
    except OSError as exc:
        return _fail(f"cannot enter container process {pid}: {exc}")
    try:
        for fd in fds:
            linux.setns(fd)
        os.fchdir(root)
        os.chroot(".")
        os.fchdir(cwd)
    except OSError as exc:
        return _fail(f"cannot enter container process {pid}: {exc}")
    for fd in (*fds, root, cwd):
        os.close(fd)
    child = os.fork()
    if child == 0:
        try:
            linux.set_parent_death_signal(signal.SIGKILL)
            if spec.get("tty"):  # kubectl exec -t: the terminal on stdin becomes its own
                os.setsid()
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            confinement.apply()
        except OSError as exc:
            os._exit(_fail(f"security context: {exc}"))
        try:
            os.execvpe(argv[0], argv, env)
        except FileNotFoundError:
            os._exit(_fail(f'exec: "{argv[0]}": executable file not found in $PATH'))
        except OSError as exc:
            os._exit(_fail(f'exec: "{argv[0]}": {exc.strerror}', 126))
    return linux.wait_exit_code(child)


def main() -> int:
    if not linux.die_with_parent():
        return 1
    with os.fdopen(int(sys.argv[1]), "rb") as f:
        spec = marshal.loads(f.read())
    return run(spec)


if __name__ == "__main__":
    sys.exit(main())
