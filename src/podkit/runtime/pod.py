"""One pod on this machine: the kubelet's order of things (asyncio shell).

Start: sandbox and volumes; init containers one at a time, each to completion, native sidecars
(init containers with restartPolicy: Always) started in order and left running; then the app
containers. Stop: app containers first (SIGTERM, grace period, SIGKILL), then the sidecars in
reverse order within what is left of the grace period. The decisions (restart or not, backoff,
phase, status) come from the pure modules status.py and backoff.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podkit.images import catalog
from podkit.manifest.model import Bundle, Pod
from podkit.runtime import hooks, statedir
from podkit.runtime.cgroups import CgroupDriver, PodCgroup
from podkit.runtime.container import APP, INIT, SIDECAR, ContainerRunner
from podkit.runtime.events import Event, EventLog
from podkit.runtime.image_pull import ImageManager
from podkit.runtime.launch import Launchers
from podkit.runtime.logs import Terminal
from podkit.runtime.network import NetworkConfig
from podkit.runtime.podfs import PodFiles
from podkit.runtime.seccomp_bpf import BpfFiles
from podkit.runtime.security import SecurityOptions
from podkit.runtime.status import (
    Conditions,
    display_status,
    now_rfc3339,
    pod_phase,
    pod_status,
    ready_summary,
)

Report = Callable[[str, str, str], None]  # (pod key, level: info|warn|error, message)
Watch = Callable[[dict[str, Any]], None]  # gets the Pod document whenever its status changes


@dataclass
class RunOptions:
    state_dir: Path
    grace: int | None = None  # overrides terminationGracePeriodSeconds
    user_images: dict[str, catalog.Image] = field(default_factory=dict)
    backoff_scale: float = 1.0
    cgroups: CgroupDriver | None = None  # None: limits are not enforced here
    network: NetworkConfig | None = None  # None: pods have loopback only
    security: SecurityOptions | None = None  # None: compiled filters under state_dir/seccomp
    images: ImageManager | None = None  # None: the store under state_dir, default registries
    launchers: Launchers = field(default_factory=Launchers)  # the containers' launchers
    cluster_dns: tuple[str, str] | None = None  # (address, domain): podkit serve's DNS

    def __post_init__(self) -> None:
        if self.security is None:
            self.security = SecurityOptions(BpfFiles(self.state_dir / "seccomp"))
        if self.images is None:
            self.images = ImageManager(self.state_dir)


class PodRunner:
    def __init__(
        self,
        pod: Pod,
        bundle: Bundle,
        opts: RunOptions,
        report: Report,
        terminal: Terminal | None,
        watch: Watch | None = None,
    ) -> None:
        self.pod, self.bundle, self.opts = pod, bundle, opts
        self.key = f"{pod.namespace}/{pod.name}"
        self.report, self.terminal = report, terminal
        self.files = PodFiles(pod, bundle, opts.state_dir, opts.cluster_dns)
        self.events = EventLog(sink=self._show_event)
        self.init = [
            ContainerRunner(self, c, SIDECAR if c.restart_policy == "Always" else INIT)
            for c in pod.init_containers
        ]
        self.apps = [ContainerRunner(self, c, APP) for c in pod.containers]
        self.conditions = Conditions()
        self.start_time = now_rfc3339()
        self.stopping = asyncio.Event()
        self.stop_deadline = 0.0
        self.init_failed = False
        self._last_line = ""
        self._last_status: dict[str, Any] = {}
        self.watch = watch
        self.cgroup: PodCgroup | None = None
        self.grace = opts.grace if opts.grace is not None else pod.termination_grace_period_seconds

    # ---- status -------------------------------------------------------------------------
    def _show_event(self, e: Event) -> None:
        if self.watch is not None:  # -o json|yaml: stdout is for the documents alone
            return
        self.report(self.key, "warn" if e.type == "Warning" else "info", f"{e.reason}  {e.message}")

    def phase(self) -> str:
        trackers = [r.tracker for r in self.apps]
        return pod_phase(
            trackers, self.pod.restart_policy, self.stopping.is_set(), self.init_failed
        )

    def status(self) -> dict[str, Any]:
        return pod_status(
            self.phase(),
            self.conditions,
            [r.tracker for r in self.apps],
            [r.tracker for r in self.init],
            self.start_time,
            self.files.pod_ip,
            "127.0.0.1",
        )

    def document(self) -> dict[str, Any]:
        """The Pod as the API server would return it, status included."""
        meta = {
            **self.pod.raw.get("metadata", {}),
            "namespace": self.pod.namespace,
            "uid": self.pod.uid,
        }
        spec = {**self.pod.raw.get("spec", {}), "nodeName": self.pod.node_name}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": spec,
            "status": self.status(),
        }

    def publish_status(self) -> None:
        doc = self.document()
        if self.files.dir.exists():
            statedir.write_json_atomic(self.files.dir / "status.json", doc)
            statedir.write_json_atomic(
                self.files.dir / "events.json",
                {
                    "apiVersion": "v1",
                    "kind": "EventList",
                    "items": [
                        e.to_k8s(self.pod.namespace, self.pod.name, self.pod.uid)
                        for e in self.events.events
                    ],
                },
            )
        apps = [r.tracker for r in self.apps]
        init = [r.tracker for r in self.init]
        restarts = sum(t.restart_count for t in apps + init)
        shown = display_status(doc["status"]["phase"], apps, init, self.stopping.is_set())
        line = f"{shown}  READY {ready_summary(apps, init)}  RESTARTS {restarts}"
        if line != self._last_line:
            self._last_line = line
            if self.watch is None:
                self.report(self.key, "info", line)
        if self.watch is not None and doc["status"] != self._last_status:
            self._last_status = doc["status"]
            self.watch(doc)

    # ---- lifecycle ----------------------------------------------------------------------
    def create_sandbox(self) -> None:
        """Fork the pod sandbox; podkit must still be single-threaded (see sandbox.py)."""
        share_pid = bool(self.pod.raw.get("spec", {}).get("shareProcessNamespace"))
        self.files.create(share_pid, self.opts.network)
        if self.opts.cgroups is not None:
            self.cgroup = self.opts.cgroups.pod(self.pod.uid)
        self.conditions.set("PodScheduled", True)
        self.events.normal("Scheduled", f"Successfully assigned {self.key} to {self.pod.node_name}")
        self.conditions.set("PodReadyToStartContainers", True)
        self.conditions.set("Initialized", not self.init)

    async def _initialize(self) -> bool:
        """Run init containers in order; True when the app containers may start."""
        for runner in self.init:
            if runner.role == SIDECAR:
                runner.task = asyncio.ensure_future(runner.run())
                await self._first(runner.started.wait(), runner.task)
                if self.stopping.is_set() or runner.task.done():
                    return False
                continue
            code = await runner.run()
            if self.stopping.is_set():
                return False
            if code != 0:  # not retried (restartPolicy Never): the pod has failed
                self.init_failed = True
                return False
        self.conditions.set("Initialized", True)
        return True

    async def _first(self, condition: Coroutine[Any, Any, Any], task: asyncio.Future[Any]) -> None:
        """Wait until `condition` holds, `task` ends or the pod is stopped."""
        waits = {asyncio.ensure_future(condition), asyncio.ensure_future(self.stopping.wait())}
        await asyncio.wait({*waits, task}, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()

    async def run(self) -> str:
        """Run the pod (its sandbox is up) until it ends or stop() is called; returns the
        final phase."""
        self.publish_status()
        try:
            if await self._initialize() and not self.stopping.is_set():
                for runner in self.apps:
                    runner.task = asyncio.ensure_future(runner.run())
                    if hooks.hook_of(runner.c.raw, "postStart") is not None:
                        # The kubelet starts the next container once this hook has run.
                        await self._first(runner.post_started.wait(), runner.task)
                await asyncio.gather(*(r.task for r in self.apps if r.task is not None))
        finally:
            await self._stop_sidecars()
        phase = self.phase()
        self.conditions.set("PodReadyToStartContainers", False)  # the sandbox goes now
        self.publish_status()
        self.teardown()
        return phase

    async def _stop_sidecars(self) -> None:
        """Sidecars outlive the app containers and stop in reverse order."""
        if not self.stopping.is_set():
            self.stop_deadline = time.monotonic() + self.grace
        for runner in reversed(self.init):
            if runner.role == SIDECAR and runner.task is not None:
                runner.request_stop(self.stop_deadline)
                await runner.task

    def stop(self) -> None:
        """Begin a graceful stop: app containers now, sidecars after them."""
        if self.stopping.is_set():
            return
        self.stop_deadline = time.monotonic() + self.grace
        self.stopping.set()
        self.report(self.key, "info", f"stopping (grace period {self.grace}s)")
        self.publish_status()
        for runner in self.apps:
            runner.request_stop(self.stop_deadline)
        for runner in self.init:
            if runner.role == INIT:
                runner.request_stop(self.stop_deadline)

    def update(self, pod: Pod, bundle: Bundle) -> list[str]:
        """A newer version of this pod and of the objects it reads, as the kubelet takes one:
        configMap, secret, downwardAPI and projected volumes follow; a container whose image
        changed is restarted with it (the only container field a pod may change). Returns
        what else changed and is not followed (fields the API would have refused)."""
        pod = dataclasses.replace(pod, uid=self.pod.uid)  # a re-read file may have no uid
        ignored = []
        old = {c.name: c for c in self.pod.init_containers + self.pod.containers}
        new = {c.name: c for c in pod.init_containers + pod.containers}
        if old.keys() != new.keys():
            return ["the pod's containers (a pod's container list cannot change)"]
        for runner in self.init + self.apps:
            c = new[runner.c.name]
            if c.image != runner.c.image:
                runner.change_image(c)
            elif c.raw != runner.c.raw:
                ignored.append(f"container {c.name} (only its image may change)")
        self.pod, self.bundle = pod, bundle
        for volume, error in self.files.refresh_volumes(pod, bundle):
            self.events.warning(
                "FailedMount", f'MountVolume.SetUp failed for volume "{volume}" : {error}'
            )
        self.publish_status()
        return ignored

    def kill_now(self) -> None:
        self.stop()
        self.stop_deadline = time.monotonic()
        for runner in self.init + self.apps:
            runner.kill_now()

    def teardown(self) -> None:
        for runner in self.init + self.apps:
            if runner.attach is not None:
                runner.attach.close()
        self.files.stop()
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
