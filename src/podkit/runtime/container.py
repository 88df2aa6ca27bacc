"""One container of a pod: launch, watch, stop, restart (asyncio shell around the pure parts).

A ContainerRunner plays one of three roles: an app container (restarted per the pod's
restartPolicy), an init container (runs to completion, retried on failure unless the policy is
Never) or a native sidecar (an init container with restartPolicy: Always, restarted whenever it
exits). The pod decides when each starts and when each is asked to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podkit.common.userns import remove_tree
from podkit.images import catalog
from podkit.manifest.model import Container
from podkit.oci.image_process import ProcessError, env_pairs, image_uid, stop_signal
from podkit.oci.lower_dirs import TooManyLayers, overlay_options
from podkit.oci.reference import InvalidReference
from podkit.oci.reference import parse as parse_reference
from podkit.runtime import container_spec, hooks, security, statedir
from podkit.runtime import env as envmod
from podkit.runtime.attach import AttachPoint
from podkit.runtime.backoff import Backoff
from podkit.runtime.cgroups import CgroupError, ContainerCgroup, Resources
from podkit.runtime.confine import Confinement
from podkit.runtime.enter import send_spec
from podkit.runtime.events import container_path
from podkit.runtime.image_pull import OciImage, PullFailed, go_duration, pull_policy
from podkit.runtime.launch import Launched, parse_report
from podkit.runtime.logs import ContainerLog, pump, pump_terminal
from podkit.runtime.prober import ProbeResult, ProbeTarget, run_probe
from podkit.runtime.probes import ContainerProbes
from podkit.runtime.seccomp_profile import ProfileError
from podkit.runtime.security_context import non_root_violation
from podkit.runtime.status import ContainerTracker, init_should_restart, should_restart
from podkit.runtime.termination import message_path, read_message

if TYPE_CHECKING:
    from podkit.runtime.pod import PodRunner

APP, INIT, SIDECAR = "app", "init", "sidecar"


class ContainerRunner:
    def __init__(self, pod: PodRunner, c: Container, role: str) -> None:
        self.pod, self.c, self.role = pod, c, role
        self.tracker = ContainerTracker(
            c.name,
            c.image,
            sidecar=role == SIDECAR,
            has_readiness_probe=role != INIT and "readinessProbe" in c.raw,
        )
        if role != APP or pod.pod.init_containers:
            self.tracker.waiting("PodInitializing")
        self.field_path = container_path(c.name, role != APP)
        self.stop_requested = asyncio.Event()
        self.deadline = 0.0
        self.proc: Launched | None = None
        self.started = asyncio.Event()  # running (and past its startupProbe): next may start
        self.exit_code: int | None = None
        self.task: asyncio.Future[int | None] | None = None  # set by the pod when it starts us
        self.cgroup: ContainerCgroup | None = None
        self.pid: int | None = None  # host pid of the container's PID 1 while it runs
        self.post_started = asyncio.Event()  # postStart done (or failed): the next may start
        self.probes: ContainerProbes | None = None
        self._probe_task: asyncio.Future[None] | None = None
        self._kill: asyncio.Future[None] | None = None
        self._backoff = Backoff(scale=pod.opts.backoff_scale)
        self.confinement = Confinement()  # set at each launch, for exec probes and hooks too
        self.image: OciImage | None = None  # a registry image, once there
        self.host_image: catalog.Image | None = None  # else a built-in or host image
        self.stop_signal = signal.SIGTERM  # the image's StopSignal
        self.respec = asyncio.Event()  # its image changed: start again from the new spec
        raw = c.raw
        self.attach = (  # `stdin: true` or `tty: true`: kept for kubectl attach (attach.py)
            AttachPoint(
                pod.files.dir / "containers" / c.name,
                bool(raw.get("tty")),
                bool(raw.get("stdinOnce")),
            )
            if raw.get("stdin") or raw.get("tty")
            else None
        )

    # ---- control from the pod ------------------------------------------------------------
    def request_stop(self, deadline: float) -> None:
        if not self.stop_requested.is_set():
            self.deadline = deadline
            self.stop_requested.set()

    def change_image(self, c: Container) -> None:
        """The pod's spec gave this container a new image: as the kubelet does, it is killed
        (gracefully) and started again from the new spec, whatever the restart policy."""
        self.c = c
        self.tracker.image, self.tracker.image_id = c.image, ""
        self.respec.set()
        proc = self.proc
        if proc is not None and proc.returncode is None:
            self.pod.events.normal(
                "Killing",
                f"Container {c.name} definition changed, will be restarted",
                self.field_path,
            )
            deadline = time.monotonic() + self.pod.grace
            self._kill = asyncio.ensure_future(self._terminate(proc, deadline, announce=False))

    async def _pause(self, delay: float | None) -> None:
        """Wait `delay` seconds (None: for ever) or until the container is stopped or given
        a new spec."""
        waits = {asyncio.ensure_future(self.stop_requested.wait()),
                 asyncio.ensure_future(self.respec.wait())}  # fmt: skip
        await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()

    def kill_now(self) -> None:
        self.deadline = time.monotonic()
        self.stop_requested.set()
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    # ---- the loop ------------------------------------------------------------------------
    def _restart_wanted(self, code: int) -> bool:
        if self.role == SIDECAR:
            return True
        if self.role == INIT:
            return init_should_restart(self.pod.pod.restart_policy, code)
        return should_restart(self.pod.pod.restart_policy, code)

    async def run(self) -> int | None:
        """Run until done or stopped; returns the last exit code (None if it never ran)."""
        events = self.pod.events
        while not self.stop_requested.is_set():
            began = time.monotonic()
            self.respec.clear()
            ready = await self._ensure_image()
            if self.respec.is_set():
                continue  # its image changed meanwhile: get the new one
            proc = await self._launch() if ready else None
            if proc is None:  # as in a cluster, the pod waits for what may never come
                self.pod.publish_status()
                await self._pause(None)
                if self.respec.is_set():
                    continue  # a new image may come
                return None
            self.pod.publish_status()
            code, message = await self._wait(proc)
            self.exit_code = code
            reason = "StartError" if message else None
            if message is None:
                policy = str(self.c.raw.get("terminationMessagePolicy") or "File")
                message = read_message(self._message_file, self._log.path, policy, code) or None
            if self.cgroup is not None:
                if self.cgroup.oom_killed(code):
                    reason = "OOMKilled"
                self.cgroup.remove()
            self.tracker.terminate(code, message, reason)
            if self.role == INIT and code == 0:
                self.tracker.ready = True  # the kubelet reports a completed init as ready
            self.started.clear()
            self.pod.publish_status()
            if self.stop_requested.is_set():
                return code
            if self.respec.is_set():  # killed for its new spec: started again at once
                self.tracker.restart_count += 1
                continue
            if not self._restart_wanted(code):
                return code
            delay = self._backoff.next_delay(time.monotonic() - began)
            if delay > 0:
                self.tracker.waiting(
                    "CrashLoopBackOff",
                    f"back-off {delay:g}s restarting failed container={self.c.name} "
                    f"pod={self.pod.pod.name}_{self.pod.pod.namespace}({self.pod.pod.uid})",
                )
                events.warning(
                    "BackOff",
                    f"Back-off restarting failed container {self.c.name} in pod "
                    f"{self.pod.pod.name}_{self.pod.pod.namespace}({self.pod.pod.uid})",
                    self.field_path,
                )
                self.pod.publish_status()
                await self._pause(delay)
                if self.stop_requested.is_set():
                    return code
            self.tracker.restart_count += 1
        return self.exit_code

    async def _ensure_image(self) -> bool:
        """The kubelet's EnsureImageExists, before each start: True once the image is there;
        False when the container cannot start (it waits, as in a cluster, until stopped)."""
        pod, c, events = self.pod, self.c, self.pod.events
        self.host_image = catalog.resolve(c.image, pod.opts.user_images)
        if self.host_image is not None:
            self.image = None
            message = f'Container image "{c.image}" already present on machine'
            events.normal("Pulled", message, self.field_path)
            return True
        try:
            ref = parse_reference(c.image)
        except InvalidReference as exc:
            message = f'Failed to apply default image tag "{c.image}": {exc}'
            self.post_started.set()
            self.tracker.waiting("InvalidImageName", message)
            events.warning("InspectFailed", message, self.field_path)
            events.warning("Failed", "Error: InvalidImageName", self.field_path)
            return False
        images = pod.opts.images
        assert images is not None
        policy = pull_policy(c, ref)
        backoff = Backoff(scale=pod.opts.backoff_scale, failures=1)  # 10 s after the first
        while not self.stop_requested.is_set() and not self.respec.is_set():
            present = images.present(ref) if policy != "Always" else None
            if present is not None:
                message = f'Container image "{c.image}" already present on machine'
                events.normal("Pulled", message, self.field_path)
                return self._use_image(present)
            if policy == "Never":
                message = f'Container image "{c.image}" is not present with pull policy of Never'
                self.tracker.waiting("ErrImageNeverPull", message)
                events.warning("ErrImageNeverPull", message, self.field_path)
                await self._pull_backoff(backoff.next_delay(0.0), None)
                continue
            events.normal("Pulling", f'Pulling image "{c.image}"', self.field_path)
            self.pod.publish_status()
            began = time.monotonic()
            try:
                image = await self._unless_stopped(images.pull(ref, pod.pod, pod.bundle))
            except asyncio.CancelledError:
                if self.stop_requested.is_set():
                    return False  # stopped while pulling: the pull stopped too
                raise
            except PullFailed as exc:
                self.tracker.waiting("ErrImagePull", str(exc))
                message = f'Failed to pull image "{c.image}": {exc}'
                events.warning("Failed", message, self.field_path)
                events.warning("Failed", "Error: ErrImagePull", self.field_path)
                await self._pull_backoff(backoff.next_delay(0.0), str(exc))
                continue
            notice = images.rootless_notice()
            if notice is not None:
                self.pod.report(self.pod.key, "warn", notice)
            took = go_duration(time.monotonic() - began)
            events.normal(
                "Pulled",
                f'Successfully pulled image "{c.image}" in {took} ({took} including waiting). '
                f"Image size: {image.record.size} bytes.",
                self.field_path,
            )
            return self._use_image(image)
        return False

    async def _unless_stopped(self, aw: Awaitable[OciImage]) -> OciImage:
        """`aw`, cancelled (CancelledError) if the container is asked to stop first."""
        task = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self.stop_requested.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # it cleans up before we go on
        return task.result()

    def _use_image(self, image: OciImage) -> bool:
        self.image = image
        self.tracker.image = str(image.ref)
        self.tracker.image_id = image.image_id
        return True

    async def _pull_backoff(self, delay: float, error: str | None) -> None:
        """Wait before the next try (or until stopped). After a failed pull the container shows
        ErrImagePull for a moment, then ImagePullBackOff, as the kubelet's next sync finds it."""
        self.post_started.set()  # the containers after it need not wait for this one
        self.pod.publish_status()
        if error is not None:
            first = min(delay, 1.0)
            await self._pause(first)
            if self.stop_requested.is_set() or self.respec.is_set():
                return
            delay -= first
            c, events = self.c, self.pod.events
            self.tracker.waiting(
                "ImagePullBackOff", f'Back-off pulling image "{c.image}": ErrImagePull: {error}'
            )
            events.normal("BackOff", f'Back-off pulling image "{c.image}"', self.field_path)
            events.warning("Failed", "Error: ImagePullBackOff", self.field_path)
            self.pod.publish_status()
        await self._pause(delay)

    async def _launch(self) -> Launched | None:
        pod, c, image, events = self.pod, self.c, self.image, self.pod.events
        config = image.config if image is not None else None
        try:
            image_env = env_pairs(config.env) if config is not None else None
            env = container_spec.environment(pod.pod, c, pod.bundle, pod.files.pod_ip, image_env)
            source = config if config is not None else self.host_image
            assert source is not None  # _ensure_image found one or the other
            argv = container_spec.argv(c, env, source)
        except (envmod.ResolveError, container_spec.ImageError) as exc:
            self._config_error("CreateContainerConfigError", str(exc))
            return None
        except ProcessError as exc:
            self._config_error("CreateContainerError", str(exc))
            return None
        sec = security.container_security(pod.pod, c)
        p = pod.pod
        user = config.user if config is not None else ""
        violation = non_root_violation(
            sec, image_uid(user), user, f"{p.name}_{p.namespace}({p.uid})", c.name
        )
        if violation is not None:
            self._config_error("CreateContainerConfigError", violation)
            return None
        assert pod.opts.security is not None
        try:
            self.confinement = security.confinement(sec, pod.opts.security)
            self.stop_signal = signal.Signals(stop_signal(config.stop_signal if config else ""))
        except (ProfileError, ProcessError) as exc:
            self._config_error("CreateContainerError", str(exc))
            return None
        self.confinement.image_user = user
        self.cgroup = None
        if pod.cgroup is not None:
            try:
                self.cgroup = pod.cgroup.container(
                    c.name,
                    self.tracker.restart_count,
                    Resources.from_spec(c.resources),
                    all_devices=sec.privileged,
                )
            except (CgroupError, ValueError) as exc:
                self._config_error("CreateContainerError", str(exc))
                return None
        cdir = pod.files.dir / "containers" / c.name
        cdir.mkdir(parents=True, exist_ok=True)
        try:
            image_root = self._image_root(cdir)
        except (OSError, TooManyLayers) as exc:
            self._config_error("CreateContainerError", f"root filesystem: {exc}")
            return None
        # The termination message file, new at each start, writable by any user (the kubelet's).
        self._message_file = cdir / f"termination-log-{self.tracker.restart_count}"
        self._message_file.write_bytes(b"")
        os.chmod(self._message_file, 0o666)
        message_mount = {
            "source": str(self._message_file),
            "target": message_path(c.raw),
            "read_only": False,
        }
        spec = {
            "sandbox_pid": pod.files.sandbox_pid,
            "pid_ns_pid": pod.files.pid_ns_pid,
            "scratch": str(cdir / "rootfs"),
            "argv": argv,
            "env": env,
            "working_dir": c.working_dir or (config.working_dir if config else None) or None,
            "mounts": [*pod.files.mounts(c), message_mount],
            "keep_host_mounts_under": str(pod.opts.state_dir),
            "hold_signals": container_spec.holds_signals(c),
            "cgroup_procs": self.cgroup.procs_files() if self.cgroup else [],
            "cgroup_mounts": pod.cgroup.driver.mounts() if self.cgroup and pod.cgroup else [],
            "confinement": self.confinement.to_json(),
            "image_root": image_root,
        }
        instance = None
        if self.attach is not None:
            await self.attach.listen()
            instance = self.attach.new_instance()
            spec.update(stdio=instance.child_path(), tty=instance.tty)
        spawned = pod.opts.launchers.take()
        proc = Launched(spawned)
        await proc.adopt()
        send_spec(spawned.spec_w, spec)  # far below the pipe buffer: this write does not block
        status_r = spawned.status_r
        events.normal("Created", f"Created container: {c.name}", self.field_path)
        loop = asyncio.get_running_loop()
        reply = (await loop.run_in_executor(None, os.read, status_r, 4096)).decode().strip()
        os.close(status_r)
        self._log = ContainerLog(pod.files.dir / "logs" / c.name, self.tracker.restart_count)
        assert proc.stdout is not None and proc.stderr is not None
        tee = None
        if instance is not None:
            instance.launched()
            tee = instance.output
        self._pumps = [
            asyncio.ensure_future(
                pump(proc.stdout, "stdout", self._log, pod.terminal, c.name, tee)
            ),
            asyncio.ensure_future(
                pump(proc.stderr, "stderr", self._log, pod.terminal, c.name, tee)
            ),
        ]
        if instance is not None and instance.tty:
            self._pumps.append(
                asyncio.ensure_future(
                    pump_terminal(instance.master, self._log, pod.terminal, c.name, instance.output)
                )
            )
        self.proc = proc
        started, pid, failure = parse_report(reply)
        proc.follow(pid)
        self._exited = asyncio.ensure_future(proc.wait())
        if started:
            self._start_error = None
            self.pid = proc.pid
            # What `kubectl exec` through podkit serve needs to enter it (runtime/exec.py).
            statedir.write_json_atomic(
                cdir / "exec.json",
                {
                    "pid": self.pid,
                    "confinement": self.confinement.to_json(),
                    "cgroup_procs": self.cgroup.procs_files() if self.cgroup else [],
                },
            )
            events.normal("Started", f"Started container {c.name}", self.field_path)
            await self._post_start(proc)
        else:
            self._start_error = failure.strip() or "the container did not start"
            events.warning("Failed", f"Error: {self._start_error}", self.field_path)
            self.post_started.set()
        return proc

    def _image_root(self, cdir: Path) -> dict[str, str] | None:
        """A registry image's overlay: its layers under a new, empty upper dir on disk (a
        restarted container starts from the image again, as in Kubernetes)."""
        if self.image is None:
            return None
        fs = cdir / "fs"
        remove_tree(fs)  # rootless, the last run's files may belong to the image's own ids
        (fs / "upper").mkdir(parents=True)
        (fs / "work").mkdir()
        options = overlay_options(list(self.image.lower), str(fs / "upper"), str(fs / "work"))
        if os.geteuid() != 0:
            options += ",userxattr"  # the kernel's overlay in a user namespace (5.11+)
        return {"store": str(self.image.store_root), "options": options}

    def _config_error(self, reason: str, message: str) -> None:
        """The container cannot be created: it waits with `reason`, as in the kubelet."""
        self.post_started.set()
        self.tracker.waiting(reason, message)
        self.pod.events.warning("Failed", f"Error: {message}", self.field_path)

    def _target(self) -> ProbeTarget:
        ports = {p.name: p.container_port for p in self.c.ports if p.name}
        assert self.pid is not None and self.pod.files.socket is not None
        procs = tuple(self.cgroup.procs_files()) if self.cgroup else ()
        return ProbeTarget(
            self.pod.files.socket,
            self.pid,
            ports,
            self.pod.files.pod_ip,
            self.confinement,
            procs,
        )

    async def _post_start(self, proc: Launched) -> None:
        """Run postStart (the container is not Running until it is done), then the probes."""
        action = hooks.hook_of(self.c.raw, "postStart")
        if action is not None:
            result = await self._hook(hooks.run_hook(action, self._target(), hooks.NO_LIMIT))
            if result is not None and not result.success:
                self.pod.events.warning(
                    "FailedPostStartHook",
                    f"PostStartHook failed: {result.message}",
                    self.field_path,
                )
                self._kill = asyncio.ensure_future(
                    self._terminate(proc, time.monotonic() + self.pod.grace)
                )
                self.post_started.set()
                return
        if self._exited.done():
            self.post_started.set()
            return
        assert self.pid is not None
        self.tracker.run(self.pid)
        self.probes = None
        if any(f"{k}Probe" in self.c.raw for k in ("startup", "readiness", "liveness")):
            self.probes = ContainerProbes.from_k8s(self.c.raw, time.monotonic())
            self.tracker.started = self.probes.started
            self.tracker.ready = self.probes.ready
            self._probe_task = asyncio.ensure_future(self._probe_loop(proc))
        if self.tracker.started:
            self.started.set()
        self.post_started.set()

    async def _probe_loop(self, proc: Launched) -> None:
        """Run each probe when due; apply what the pure workers decide."""
        probes, target = self.probes, self._target()
        assert probes is not None
        while True:
            now = time.monotonic()
            due = probes.due(now)
            if not due:
                # The probes' own schedule (periodSeconds): a timer, not a condition.
                await asyncio.sleep(max(0.0, min(probes.next_due(now), now + 3600) - now))
                continue
            results = await asyncio.gather(*(run_probe(w.spec, target) for w in due))
            for worker, result in zip(due, results, strict=True):
                decision = probes.record(
                    worker.kind,
                    result.success,
                    time.monotonic(),
                    result.message,
                    warning=result.warning,
                )
                for e in decision.events:
                    self.pod.events.add(e.type, e.reason, e.message, self.field_path)
                if not decision.changed:
                    continue
                self.tracker.started = probes.started
                self.tracker.ready = probes.ready
                if self.tracker.started:
                    self.started.set()
                self.pod.publish_status()
                if decision.restart:
                    grace = decision.grace_period
                    deadline = time.monotonic() + (grace if grace is not None else self.pod.grace)
                    await self._terminate(proc, deadline, announce=False)
                    return

    async def _terminate(self, proc: Launched, deadline: float, announce: bool = True) -> None:
        """preStop, SIGTERM, then SIGKILL at the deadline (the kubelet's killContainer)."""
        if self._exited.done():
            return
        if announce:
            self.pod.events.normal("Killing", f"Stopping container {self.c.name}", self.field_path)
        action = hooks.hook_of(self.c.raw, "preStop")
        if action is not None and self.pid is not None and self.tracker.running:
            result = await self._hook(
                hooks.run_hook(action, self._target(), deadline - time.monotonic()), deadline
            )
            if result is not None and not result.success:
                self.pod.events.warning(
                    "FailedPreStopHook", f"PreStopHook failed: {result.message}", self.field_path
                )
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(self.stop_signal)
        try:
            await asyncio.wait_for(
                asyncio.shield(self._exited), max(0.0, deadline - time.monotonic())
            )
        except TimeoutError:
            self.pod.report(
                self.pod.key,
                "warn",
                f"container {self.c.name}: still running after the grace period "
                f"({self.pod.grace}s), SIGKILL",
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    async def _hook(
        self, aw: Awaitable[ProbeResult], deadline: float | None = None
    ) -> ProbeResult | None:
        """Await a hook; None if the container exits first, the deadline passes or (without a
        deadline: postStart) the container is asked to stop."""
        task = asyncio.ensure_future(aw)
        waits: set[asyncio.Future[Any]] = {task, self._exited}
        stop = None if deadline is not None else asyncio.ensure_future(self.stop_requested.wait())
        if stop is not None:
            waits.add(stop)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if stop is not None:
            stop.cancel()
        if not task.done():
            task.cancel()
            return None
        return task.result()

    async def _wait(self, proc: Launched) -> tuple[int, str | None]:
        """Wait for the exit; on a stop request: preStop, SIGTERM, SIGKILL at the deadline."""
        stop = asyncio.ensure_future(self.stop_requested.wait())
        await asyncio.wait({self._exited, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not self._exited.done():
            if self._probe_task is not None:
                self._probe_task.cancel()  # a liveness kill must not race the stop
            await self._terminate(proc, self.deadline)
        code = await self._exited
        for task in (self._probe_task, self._kill):
            if task is not None and not task.done():
                task.cancel()
        self._probe_task = self._kill = None
        # Its output ends with it, unless a child it left behind (possible in a shared PID
        # namespace) still holds the pipe: do not wait for that one.
        _, stragglers = await asyncio.wait(self._pumps, timeout=0.5)
        for pump_task in stragglers:
            pump_task.cancel()
        self._log.close()
        if self.attach is not None and self.attach.current is not None:
            self.attach.current.end()  # attach sessions end with the container instance
        self.proc = None
        self.pid = None
        return (128 - code if code < 0 else code), self._start_error
