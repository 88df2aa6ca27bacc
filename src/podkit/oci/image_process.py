"""Image config -> process: what containerd's CRI plugin makes of an image and a container spec
(pkg/cri/server/container_create_linux.go). Pure functions; the runtime does the I/O.

    argv     `command` replaces ENTRYPOINT and drops CMD; `args` replaces CMD
    env      the default PATH, then the image's Env, then the container's env (later wins)
    workdir  the container's workingDir, else the image's WorkingDir, else /
    user     the image's User ("name", "uid", "uid:gid", "name:group") unless runAsUser is set;
             resolved in the image's /etc/passwd and /etc/group (runtime/users.py)
    signal   the image's StopSignal ("SIGQUIT", "QUIT" or "3"), else SIGTERM
"""

from __future__ import annotations

import signal


class ProcessError(ValueError):
    """The image and the container together name no process (CreateContainerError)."""


def process_args(
    entrypoint: tuple[str, ...] | list[str],
    cmd: tuple[str, ...] | list[str],
    command: list[str],
    args: list[str],
) -> list[str]:
    """containerd's getProcessArgs: with no command, args default to CMD and the command is the
    ENTRYPOINT (an ENTRYPOINT of one empty string means none, as Docker writes a reset one)."""
    if not command:
        if not args:
            args = list(cmd)
        if not (len(entrypoint) == 1 and entrypoint[0] == ""):
            command = list(entrypoint)
    argv = [*command, *args]
    if not argv:
        raise ProcessError("no command specified: the image has no ENTRYPOINT or CMD")
    return argv


def env_pairs(entries: tuple[str, ...] | list[str]) -> dict[str, str]:
    """An image's Env ("NAME=value" strings; a bare NAME means empty, as Docker reads it)."""
    out: dict[str, str] = {}
    for entry in entries:
        name, _, value = entry.partition("=")
        if name:
            out[name] = value
    return out


def stop_signal(text: str) -> int:
    """The image's StopSignal as a number; SIGTERM when it names none."""
    if not text:
        return int(signal.SIGTERM)
    if text.isdigit():
        number = int(text)
        if 0 < number < signal.NSIG:
            return number
        raise ProcessError(f"image StopSignal {text!r}: no such signal")
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    rt = _realtime(name)
    if rt is not None:
        return rt
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ProcessError(f"image StopSignal {text!r}: no such signal") from None


def _realtime(name: str) -> int | None:
    """SIGRTMIN+3 (systemd's) and SIGRTMAX-1 forms."""
    for base, sign in (("SIGRTMIN", 1), ("SIGRTMAX", -1)):
        if name == base:
            return int(getattr(signal, base))
        if name.startswith(base) and name[len(base)] in "+-":
            offset = name[len(base) + 1 :]
            if offset.isdigit() and (name[len(base)] == "+") == (sign > 0):
                return int(getattr(signal, base)) + sign * int(offset)
    return None


def image_uid(user: str) -> int | None:
    """The uid the image's User names when it is numeric ("1000", "1000:50"), else None: a
    name can only be resolved inside the image, so runAsNonRoot cannot check it."""
    uid = user.split(":", 1)[0]
    return int(uid) if uid.isdigit() else None
