"""The pod sandbox: a tiny process that holds the pod's namespaces (the kubelet's "pause").

Run as `python -m podkit.runtime.sandbox --hostname NAME [--tmpfs PATH[:BYTES]]...` by the
runtime. It creates the pod's network (loopback up), UTS (hostname), IPC and mount namespaces,
mounts pod-wide tmpfs volumes (emptyDir medium: Memory, /dev/shm) inside its own mount namespace
so they never appear on the host, prints `ready` and waits. Containers join its namespaces
through /proc/<pid>/ns/*. It dies with its parent (PDEATHSIG), and its namespaces with it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from podkit.runtime import linux


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="podkit-sandbox")
    p.add_argument("--hostname", required=True)
    p.add_argument("--tmpfs", action="append", default=[], help="PATH[:SIZE_BYTES]")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    parent = os.getppid()
    linux.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:  # parent died before prctl took effect
        return 1
    try:
        linux.unshare(
            linux.CLONE_NEWNET | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWNS
        )
        # Mounts made from here on stay in the pod; the host never sees them.
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        linux.sethostname(args.hostname)
        linux.loopback_up()
        for spec in args.tmpfs:
            path, _, size = spec.partition(":")
            os.makedirs(path, exist_ok=True)
            linux.mount(
                "tmpfs",
                path,
                "tmpfs",
                linux.MS_NOSUID | linux.MS_NODEV,
                f"mode=1777,size={size}" if size else "mode=1777",
            )
    except OSError as exc:
        print(f"sandbox: {exc}", file=sys.stderr, flush=True)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is podkit's to handle
    print("ready", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
