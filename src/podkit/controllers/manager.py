"""The controllers `podkit serve` runs (the kube-controller-manager's, those its kinds need),
each a task on serve's event loop until it stops."""

from __future__ import annotations

import asyncio

from podkit.api.rest import Rest
from podkit.controllers.deployment import DeploymentController
from podkit.controllers.gc import GarbageCollector
from podkit.controllers.replicaset import ReplicaSetController


async def run(rest: Rest, stop: asyncio.Event) -> None:
    controllers = [DeploymentController(rest), ReplicaSetController(rest), GarbageCollector(rest)]
    await asyncio.gather(*(c.run(stop) for c in controllers))
