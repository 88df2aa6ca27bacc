"""The controllers `podkit serve` runs (the kube-controller-manager's, those its kinds need,
and kube-proxy's Service rules), each a task on serve's event loop until it stops."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from podkit.api.rest import Rest
from podkit.controllers.deployment import DeploymentController
from podkit.controllers.endpoints import EndpointSliceController
from podkit.controllers.gc import GarbageCollector
from podkit.controllers.job import JobController
from podkit.controllers.loop import Controller
from podkit.controllers.replicaset import ReplicaSetController
from podkit.network import service_proxy, userspace_proxy


async def run(
    rest: Rest,
    stop: asyncio.Event,
    state_dir: Path,
    say: Callable[[str], None],
    node_port_addresses: list[str] = service_proxy.NODE_PORT_ADDRESSES,
    socket_lb: bool = True,
) -> None:
    controllers: list[Controller] = [
        DeploymentController(rest),
        ReplicaSetController(rest),
        JobController(rest),
        EndpointSliceController(rest),
        GarbageCollector(rest),
    ]
    proxy: service_proxy.ServiceProxy | userspace_proxy.UserspaceProxy | None = None
    why = service_proxy.why_not()
    if why is None:
        service_proxy.claim(state_dir)
        proxy = service_proxy.ServiceProxy(rest, state_dir, node_port_addresses, socket_lb, say)
    elif os.geteuid() != 0:  # no pod IPs: Services on each pod's loopback
        proxy = userspace_proxy.UserspaceProxy(rest, state_dir, node_port_addresses)
    else:
        say(f"podkit serve: {why}")
    if proxy is not None:
        controllers.append(proxy)
    try:
        await asyncio.gather(*(c.run(stop) for c in controllers))
    finally:
        if proxy is not None:
            proxy.close()
