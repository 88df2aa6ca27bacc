"""The local node: runs every pod of a bundle, publishes their ports, handles Ctrl-C/SIGTERM.

Exit status as `podkit run` reports it: 0 when the pods succeeded or the user asked to stop,
1 when a pod failed or could not start.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable

from podkit.manifest.errors import ManifestError
from podkit.manifest.model import Bundle
from podkit.runtime import cgroups, forward, network, statedir
from podkit.runtime.launch import Launchers
from podkit.runtime.logs import Terminal
from podkit.runtime.pod import PodRunner, Report, RunOptions, Watch
from podkit.runtime.ports import Published

# Ctrl-C, kill and a closed terminal (SIGHUP) all stop the pods gracefully.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Re-read the manifests: configMap/secret volumes follow them, a new image restarts its
# container (podkit serve's node agent sends it to a pod's supervisor).
RELOAD_SIGNAL = signal.SIGUSR1
Reload = Callable[[], Bundle]


async def run_pods(
    runners: list[PodRunner],
    published: list[Published],
    listeners: list[socket.socket],
    report: Report,
    reload: Reload | None = None,
) -> int:
    """Publish the ports, run the pods (their sandboxes exist) until they end or are stopped;
    RELOAD_SIGNAL hands them a newer version of their manifests, from `reload`."""
    loop = asyncio.get_running_loop()
    user_stop = asyncio.Event()

    def on_signal(signame: str) -> None:
        if user_stop.is_set():
            report("podkit", "warn", f"{signame} again: killing every container now")
            for r in runners:
                r.kill_now()
            return
        user_stop.set()
        for r in runners:
            r.stop()

    def on_reload() -> None:
        if reload is not None:
            _reload(runners, reload, report)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig.name)
    loop.add_signal_handler(RELOAD_SIGNAL, on_reload)
    # The CLI held these back while starting; one that came meanwhile is handled now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (*STOP_SIGNALS, RELOAD_SIGNAL))
    servers: list[asyncio.Server] = []
    try:
        by_key = {r.key: r for r in runners}
        for p, sock in zip(published, listeners, strict=True):
            sockets = by_key[p.pod].files.socket
            assert sockets is not None  # the sandboxes were created before the loop ran
            servers.append(await forward.serve(sock, p, sockets))
            report(p.pod, "info", f"port {p.container_port} of {p.container} published on {p.url}")
        phases = await asyncio.gather(*(r.run() for r in runners))
    finally:
        for server in servers:
            server.close()
        for sig in (*STOP_SIGNALS, RELOAD_SIGNAL):
            loop.remove_signal_handler(sig)
    if user_stop.is_set():
        return 0
    return 0 if all(p == "Succeeded" for p in phases) else 1


def _reload(runners: list[PodRunner], reload: Reload, report: Report) -> None:
    try:
        bundle = reload()
    except ManifestError as exc:
        problems = "; ".join(str(p) for p in exc.problems)
        report("podkit", "error", f"the manifests no longer load, nothing changes: {problems}")
        return
    pods = {f"{p.namespace}/{p.name}": p for p in bundle.pods}
    for runner in runners:
        pod = pods.get(runner.key)
        if pod is None:
            report(runner.key, "warn", "no longer in the manifests: it runs on (stop it to end it)")
            continue
        for what in runner.update(pod, bundle):
            report(runner.key, "warn", f"a change to {what} is not followed")


def _pod_network(report: Report) -> network.NetworkConfig | None:
    """The bridge pods get their IPs on, or None (loopback-only pods) with the reason said."""
    why = network.available()
    if why is None:
        cfg = network.NetworkConfig.from_env()
        try:
            no_nat = network.ensure_bridge(cfg, network.HOST_DIR)
            network.clean_stale(cfg, network.HOST_DIR)
        except network.NetworkError as exc:
            why = str(exc)
        else:
            if no_nat:
                report("podkit", "warn", f"pods cannot reach beyond this host: {no_nat}")
            return cfg
    report("podkit", "warn", f"pods get no IP of their own (loopback only): {why}")
    return None


def run(
    bundle: Bundle,
    opts: RunOptions,
    published: list[Published],
    listeners: list[socket.socket],
    report: Report,
    terminal: Terminal | None,
    watch: Watch | None = None,
    reload: Reload | None = None,
) -> int:
    opts.state_dir.mkdir(parents=True, exist_ok=True)
    # One launcher starts now, its interpreter overlapping the set-up below. Only one: on a
    # 2-core machine a second one slowed that set-up by as much as it saved (measured).
    opts.launchers = Launchers(ahead=1)
    try:
        for name in statedir.clean_stale(opts.state_dir):
            report("podkit", "info", f"cleaned state left by a killed run: {name}")
        opts.network = _pod_network(report)
        driver, why = cgroups.detect()
        if driver is not None:
            cgroups.clean_stale(driver)
            opts.cgroups = driver
        elif any(
            c.resources.get("limits") for p in bundle.pods for c in p.containers + p.init_containers
        ):
            report("podkit", "warn", f"resource limits are not enforced: {why}")
        try:
            import uvloop

            run_loop: Callable[..., int] = uvloop.run
        except ImportError:  # uvloop is a dependency, but the runtime does not need its speed
            run_loop = asyncio.run
        runners = [PodRunner(pod, bundle, opts, report, terminal, watch) for pod in bundle.pods]
        try:
            # Forked before the event loop exists: a fork is only safe while single-threaded.
            for r in runners:
                r.create_sandbox()
        except (OSError, RuntimeError, network.NetworkError) as exc:
            report("podkit", "error", f"could not create the pod sandbox: {exc}")
            for r in runners:
                r.teardown()
            return 1
        try:
            return run_loop(run_pods(runners, published, listeners, report, reload))
        except KeyboardInterrupt:  # a Ctrl-C in the instant before the handlers were installed
            return 0
        finally:
            for r in runners:
                r.teardown()
    finally:
        opts.launchers.close()
