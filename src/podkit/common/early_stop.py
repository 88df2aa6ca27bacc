"""Exit at once on SIGTERM while an image is still starting.

A container's main process is PID 1 of its PID namespace, and the kernel drops signals that
PID 1 does not handle: an image still importing its modules would ignore the kubelet's SIGTERM
and sit out the whole grace period. Installed as the first thing an image does; the image's
graceful handler replaces it once there is something to drain. SIGINT keeps Python's default
(KeyboardInterrupt) until then.
"""

from __future__ import annotations

import os
import signal


def install() -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    # podkit starts built-in images with SIGTERM/SIGINT blocked so none is lost before this line;
    # a stop that already came is delivered now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
