"""postStart / preStop lifecycle hooks: exec, httpGet, sleep (tcpSocket, deprecated, too).

exec and httpGet reuse the prober's handlers (run inside the container / the pod's network
namespace); a hook has no timeout of its own, so the caller bounds it (preStop by the grace
period).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from podkit.manifest.probe_spec import ProbeSpec, ProbeSpecError
from podkit.runtime.prober import ProbeResult, ProbeTarget, run_probe

NO_LIMIT = 24 * 3600  # seconds: an unbounded postStart is bounded by nothing but this


async def run_hook(action: dict[str, Any], target: ProbeTarget, timeout: float) -> ProbeResult:
    """Run one LifecycleHandler within `timeout` seconds."""
    if "sleep" in action:
        seconds = int(action["sleep"].get("seconds", 0))
        # The sleep action *is* a wait: the hook's whole job is to delay the next step.
        await asyncio.sleep(min(seconds, timeout))
        return ProbeResult(True, "")
    try:
        spec = ProbeSpec.from_k8s({**action, "timeoutSeconds": 1})
    except ProbeSpecError as exc:
        return ProbeResult(False, f"invalid hook: {exc}")
    spec = dataclasses.replace(spec, timeout_seconds=max(timeout, 0.001))  # type: ignore[arg-type]
    return await run_probe(spec, target)


def hook_of(container_raw: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The container's lifecycle.postStart or lifecycle.preStop action, if any."""
    lifecycle = container_raw.get("lifecycle") or {}
    action = lifecycle.get(name)
    return action if isinstance(action, dict) and action else None
