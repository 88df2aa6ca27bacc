"""One pod on this machine: sandbox, volumes, containers, restarts, stop, status (asyncio shell).

The decisions (restart or not, how long to back off, which phase) come from the pure modules
status.py and backoff.py; this file only does the I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podkit.images import catalog
from podkit.manifest import quantity
from podkit.manifest.model import Bundle, Container, Pod
from podkit.runtime import env as envmod
from podkit.runtime import sandbox, statedir
from podkit.runtime.backoff import Backoff
from podkit.runtime.logs import ContainerLog, Terminal, pump
from podkit.runtime.status import (
    Conditions,
    ContainerTracker,
    display_status,
    now_rfc3339,
    pod_phase,
    pod_status,
    ready_summary,
    should_restart,
)
from podkit.runtime.volume_files import projected_files

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The launcher needs only the standard library and podkit: skip site (and its .pth hooks).
_PODKIT_PARENT = str(Path(__file__).resolve().parents[2])
LAUNCHER = [
    sys.executable,
    "-S",
    "-c",
    f"import sys; sys.path.insert(0, {_PODKIT_PARENT!r}); "
    "from podkit.runtime.launcher import main; sys.exit(main())",
]
Report = Callable[[str, str, str], None]  # (pod key, level: info|warn|error, message)


@dataclass
class RunOptions:
    state_dir: Path
    grace: int | None = None  # overrides terminationGracePeriodSeconds
    user_images: dict[str, catalog.Image] = field(default_factory=dict)
    backoff_scale: float = 1.0
    pod_ip: str = "127.0.0.1"


class PodRunner:
    def __init__(
        self, pod: Pod, bundle: Bundle, opts: RunOptions, report: Report, terminal: Terminal | None
    ) -> None:
        self.pod, self.bundle, self.opts = pod, bundle, opts
        self.key = f"{pod.namespace}/{pod.name}"
        self.report, self.terminal = report, terminal
        self.dir = opts.state_dir / "pods" / f"{pod.namespace}_{pod.name}_{pod.uid}"
        self.trackers = [ContainerTracker(c.name, c.image) for c in pod.containers]
        self.conditions = Conditions()
        self.start_time = now_rfc3339()
        self.stopping = asyncio.Event()
        self.sandbox_pid: int | None = None
        self.volume_paths: dict[str, str] = {}
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self._last_line = ""
        self._pumps: dict[str, tuple[list[asyncio.Future[None]], ContainerLog]] = {}
        self._start_error: dict[str, str] = {}
        self.stop_deadline = 0.0
        self.grace = opts.grace if opts.grace is not None else pod.termination_grace_period_seconds

    # ---- status -------------------------------------------------------------------------
    def phase(self) -> str:
        return pod_phase(self.trackers, self.pod.restart_policy, self.stopping.is_set())

    def status(self) -> dict[str, Any]:
        return pod_status(
            self.phase(),
            self.conditions,
            self.trackers,
            self.start_time,
            self.opts.pod_ip,
            "127.0.0.1",
        )

    def publish_status(self) -> None:
        status = self.status()
        doc = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": self.pod.raw.get("metadata", {}),
            "spec": self.pod.raw.get("spec", {}),
            "status": status,
        }
        doc["metadata"] = {**doc["metadata"], "namespace": self.pod.namespace, "uid": self.pod.uid}
        if self.dir.exists():
            statedir.write_json_atomic(self.dir / "status.json", doc)
        restarts = sum(t.restart_count for t in self.trackers)
        line = (
            f"{display_status(status['phase'], self.trackers)}  "
            f"READY {ready_summary(self.trackers)}  RESTARTS {restarts}"
        )
        if line != self._last_line:
            self._last_line = line
            self.report(self.key, "info", line)

    # ---- sandbox and volumes ------------------------------------------------------------
    def _tmpfs_volumes(self) -> list[tuple[str, int | None]]:
        """Volumes that must live in memory: emptyDir medium Memory, secrets (never on disk)."""
        specs: list[tuple[str, int | None]] = [(f"{self.dir}/shm", None)]
        for v in self.pod.volumes:
            path = f"{self.dir}/volumes/{v.name}"
            if v.kind == "emptyDir" and v.source.get("medium") == "Memory":
                limit = v.source.get("sizeLimit")
                size = quantity.value(quantity.parse_quantity(limit)) if limit else None
                specs.append((path, size or None))
            elif v.kind == "secret":
                specs.append((path, None))
        return specs

    def create_sandbox(self) -> None:
        """Fork the pod sandbox; podkit must still be single-threaded (see sandbox.py)."""
        for sub in ("logs", "volumes", "containers", "etc"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "owner").write_text(statedir.owner_record())
        self.sandbox_pid = sandbox.fork_sandbox(self.pod.hostname, self._tmpfs_volumes())
        self.conditions.set("PodScheduled", True)
        self.conditions.set("PodReadyToStartContainers", True)
        self.conditions.set("Initialized", True)
        self._write_etc()
        self._prepare_volumes()

    def _in_sandbox(self, path: str) -> str:
        """A path as the sandbox's mount namespace sees it (where its tmpfs mounts live)."""
        return f"/proc/{self.sandbox_pid}/root{path}"

    def _write_etc(self) -> None:
        etc = self.dir / "etc"
        (etc / "hostname").write_text(self.pod.hostname + "\n")
        (etc / "hosts").write_text(
            "# Kubernetes-managed hosts file (podkit).\n127.0.0.1\tlocalhost\n"
            f"::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{self.opts.pod_ip}\t{self.pod.hostname}\n"
        )

    def _prepare_volumes(self) -> None:
        for v in self.pod.volumes:
            path = f"{self.dir}/volumes/{v.name}"
            if v.kind == "hostPath":
                self.volume_paths[v.name] = v.source["path"]
                continue
            os.makedirs(self._in_sandbox(path), exist_ok=True)
            if v.kind in ("configMap", "secret", "downwardAPI", "projected"):
                for rel, (content, mode) in projected_files(self.pod, v, self.bundle).items():
                    target = self._in_sandbox(f"{path}/{rel}")
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
                    with os.fdopen(fd, "wb") as f:
                        f.write(content)
                    os.chmod(target, mode)
            self.volume_paths[v.name] = path

    # ---- containers ---------------------------------------------------------------------
    def _argv(self, c: Container, env: dict[str, str]) -> tuple[list[str] | None, str]:
        command, args = envmod.expand_command(c, env)
        image = catalog.resolve(c.image, self.opts.user_images)
        if command:
            return command + args, ""
        if image is None:
            return None, (
                f'image "{c.image}" is not a podkit built-in image '
                f"({', '.join(sorted(catalog.BUILTIN))}) and the container has no "
                "command: add `command:` to run a host program, or map the image "
                "in an image catalog file (--image-catalog)"
            )
        return image.entrypoint + (args or image.cmd), ""

    def _env(self, c: Container) -> dict[str, str]:
        injected = {
            "PATH": DEFAULT_PATH,
            "HOSTNAME": self.pod.hostname,
            "PODKIT_POD_NAME": self.pod.name,
            "PODKIT_POD_NAMESPACE": self.pod.namespace,
            "PODKIT_POD_UID": self.pod.uid,
            "PODKIT_NODE_NAME": self.pod.node_name,
            "PODKIT_CONTAINER_NAME": c.name,
            "PODKIT_POD_LABELS": json.dumps(self.pod.labels),
        }
        if catalog.builtin_name(c.image):
            injected["PYTHONUNBUFFERED"] = "1"  # the image's ENV: line-buffered logs
        resolved = envmod.resolve_env(
            self.pod,
            c,
            self.bundle,
            {"status.podIP": self.opts.pod_ip, "status.hostIP": "127.0.0.1"},
        )
        return {**injected, **resolved}

    def _mounts(self, c: Container) -> list[dict[str, Any]]:
        mounts: list[dict[str, Any]] = []
        targets = {m.mount_path for m in c.volume_mounts}
        for name in ("hosts", "hostname"):
            if f"/etc/{name}" not in targets:
                mounts.append(
                    {
                        "source": str(self.dir / "etc" / name),
                        "target": f"/etc/{name}",
                        "read_only": False,
                    }
                )
        mounts.append({"source": str(self.dir / "shm"), "target": "/dev/shm", "read_only": False})
        kinds = {v.name: v.kind for v in self.pod.volumes}
        for m in c.volume_mounts:
            source = self.volume_paths[m.name]
            if m.sub_path:
                source = os.path.join(source, m.sub_path)
                in_sb = source if kinds[m.name] == "hostPath" else self._in_sandbox(source)
                if not os.path.exists(in_sb):
                    os.makedirs(in_sb, exist_ok=True)  # the kubelet creates a missing subPath
            read_only = m.read_only or kinds[m.name] in (
                "configMap",
                "secret",
                "downwardAPI",
                "projected",
            )
            mounts.append({"source": source, "target": m.mount_path, "read_only": read_only})
        return mounts

    async def _launch(
        self, c: Container, tracker: ContainerTracker
    ) -> asyncio.subprocess.Process | None:
        try:
            env = self._env(c)
        except envmod.ResolveError as exc:
            tracker.waiting("CreateContainerConfigError", str(exc))
            self.report(self.key, "error", f"container {c.name}: CreateContainerConfigError: {exc}")
            return None
        argv, why = self._argv(c, env)
        if argv is None:
            tracker.waiting("ErrImagePull", why)
            self.report(self.key, "error", f"container {c.name}: ErrImagePull: {why}")
            return None
        cdir = self.dir / "containers" / c.name
        cdir.mkdir(parents=True, exist_ok=True)
        spec = {
            "sandbox_pid": self.sandbox_pid,
            "scratch": str(cdir / "rootfs"),
            "argv": argv,
            "env": env,
            "working_dir": c.working_dir,
            "mounts": self._mounts(c),
            "keep_host_mounts_under": str(self.opts.state_dir),
            "hold_signals": catalog.builtin_name(c.image) is not None and not c.command,
        }
        spec_path = cdir / "launch.json"
        spec_path.write_text(json.dumps(spec))
        os.chmod(spec_path, 0o600)  # it holds the container's environment, secrets included
        status_r, status_w = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "podkit.runtime.launcher",
                str(spec_path),
                str(status_w),
                pass_fds=[status_w],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        finally:
            os.close(status_w)
        loop = asyncio.get_running_loop()
        reply = (await loop.run_in_executor(None, os.read, status_r, 4096)).decode().strip()
        os.close(status_r)
        log = ContainerLog(self.dir / "logs" / c.name, tracker.restart_count)
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            asyncio.ensure_future(pump(proc.stdout, "stdout", log, self.terminal, c.name)),
            asyncio.ensure_future(pump(proc.stderr, "stderr", log, self.terminal, c.name)),
        ]
        self._pumps[c.name] = (pumps, log)
        if reply.startswith("started"):
            tracker.run(int(reply.split()[1]))
            self.report(self.key, "info", f"container {c.name}: Running")
        else:
            message = reply.removeprefix("error ").strip() or "the container did not start"
            self._start_error[c.name] = message
            self.report(self.key, "error", f"container {c.name}: failed to start: {message}")
        self.procs[c.name] = proc
        return proc

    async def _finish(self, c: Container, proc: asyncio.subprocess.Process) -> int:
        """Wait for the container to exit; on pod stop: SIGTERM, grace period, SIGKILL."""
        exited = asyncio.ensure_future(proc.wait())
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not exited.done():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(
                    asyncio.shield(exited), max(0.0, self.stop_deadline - time.monotonic())
                )
            except TimeoutError:
                self.report(
                    self.key,
                    "warn",
                    f"container {c.name}: still running after {self.grace}s, SIGKILL",
                )
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        code = await exited
        pumps, log = self._pumps.pop(c.name)
        await asyncio.gather(*pumps, return_exceptions=True)
        log.close()
        return 128 + -code if code < 0 else code

    async def _run_container(self, c: Container, tracker: ContainerTracker) -> None:
        backoff = Backoff(scale=self.opts.backoff_scale)
        while not self.stopping.is_set():
            started = time.monotonic()
            proc = await self._launch(c, tracker)
            if proc is None:  # as in a cluster, the pod waits for what may never come
                self.publish_status()
                await self.stopping.wait()
                return
            self.publish_status()
            code = await self._finish(c, proc)
            message = self._start_error.pop(c.name, None)
            reason = "StartError" if message else None
            tracker.terminate(code, message, reason)
            self.procs.pop(c.name, None)
            if not self.stopping.is_set():
                self.report(
                    self.key,
                    "warn" if code else "info",
                    f"container {c.name}: exited with code {code}",
                )
            self.publish_status()
            if self.stopping.is_set() or not should_restart(self.pod.restart_policy, code):
                return
            delay = backoff.next_delay(time.monotonic() - started)
            if delay > 0:
                tracker.waiting(
                    "CrashLoopBackOff",
                    f"back-off {delay:g}s restarting failed container={c.name} pod={self.pod.name}",
                )
                self.publish_status()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
                if self.stopping.is_set():
                    return
            tracker.restart_count += 1

    async def run(self) -> str:
        """Start the containers (the sandbox is up), wait until the pod ends or stop() is
        called; returns the final phase."""
        self.publish_status()
        tasks = [
            asyncio.ensure_future(self._run_container(c, t))
            for c, t in zip(self.pod.containers, self.trackers, strict=True)
        ]
        await asyncio.gather(*tasks)
        phase = self.phase()
        self.publish_status()
        self.teardown()
        return phase

    def stop(self) -> None:
        """Begin a graceful stop: every container gets SIGTERM, then SIGKILL after the grace."""
        if self.stopping.is_set():
            return
        self.stop_deadline = time.monotonic() + self.grace
        self.stopping.set()
        self.report(self.key, "info", f"stopping (grace period {self.grace}s)")

    def kill_now(self) -> None:
        self.stop_deadline = time.monotonic()
        self.stopping.set()
        for proc in list(self.procs.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    def teardown(self) -> None:
        if self.sandbox_pid is not None:
            sandbox.stop_sandbox(self.sandbox_pid)
            self.sandbox_pid = None
        statedir.remove_volatile(self.dir)
        with contextlib.suppress(OSError):
            (self.dir / "owner").unlink()
