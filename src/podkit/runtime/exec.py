"""A command run inside a running container for `kubectl exec` (podkit serve): the same enter
helper as exec probes and hooks (runtime/enter.py), with the container's PID 1, confinement and
cgroups read from the `exec.json` its supervisor wrote when the container started, and its
environment from /proc, as runc exec takes them."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from podkit.runtime.confine import Confinement
from podkit.runtime.enter import enter_spec, send_spec
from podkit.runtime.prober import ENTER, container_env


class ExecError(Exception):
    pass


async def start(
    pod_dir: Path, container: str, argv: list[str], tty: int | None = None
) -> asyncio.subprocess.Process:
    """The command, started in the container: its stdin, stdout and stderr are pipes, or with
    `tty` (a pseudo-terminal's other end) that terminal, as its controlling one."""
    try:
        found = json.loads((pod_dir / "containers" / container / "exec.json").read_bytes())
        pid = int(found["pid"])
        env = container_env(pid)
    except (OSError, ValueError, KeyError):
        raise ExecError(f'container "{container}" is not running') from None
    if tty is not None:
        env.setdefault("TERM", "xterm")
    spec = enter_spec(
        pid, argv, env, Confinement.from_json(found["confinement"]), list(found["cgroup_procs"])
    )
    spec["tty"] = tty is not None
    spec_r, spec_w = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *ENTER,
            str(spec_r),
            pass_fds=[spec_r],
            stdin=asyncio.subprocess.PIPE if tty is None else tty,
            stdout=asyncio.subprocess.PIPE if tty is None else tty,
            stderr=asyncio.subprocess.PIPE if tty is None else tty,
            env={},
            start_new_session=True,
        )
    except OSError as exc:
        os.close(spec_w)
        raise ExecError(f"cannot exec in container {container}: {exc.strerror}") from None
    finally:
        os.close(spec_r)
    send_spec(spec_w, spec)
    return proc
