"""The node of `podkit serve`: it runs the pods the API holds and writes their status back.

Each pod runs under its own supervisor, `podkit run` of that one pod (containerd's shim and
podman's conmon are the models), forked from podkit's fork server (forkserver.py: the
supervisors share its imported modules). The supervisor is started in a session of its own
and is not tied to serve's life, so a kill -9 of serve, or an upgrade, stops no container. A
restarted serve finds the supervisors still running (the pod directory's `owner` file names
the pid and its start time) and adopts them: nothing restarts.

The supervisor writes the pod's status to `<state>/pods/<ns>_<name>_<uid>/status.json`, as
`podkit run` always does. The agent mirrors that file into the API's status subresource, so
status survives serve's restarts too; nothing goes over a pipe that serve's death would break.

Deletion follows the kubelet:
- the API marks the pod (deletionTimestamp, a grace period);
- the agent sends the supervisor SIGTERM, and the supervisor stops the containers gracefully
  (preStop, SIGTERM, the grace period, SIGKILL);
- the object is removed once the supervisor has exited.
A forced deletion (grace 0) removes the object at once; the agent then kills the supervisor.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from podkit import __version__
from podkit.api import tokens
from podkit.api.kinds import CONFIGMAP, EVENT, NODE, POD, SECRET, SERVICE, SERVICE_ACCOUNT
from podkit.api.rest import Rest, now
from podkit.api.status import ApiError
from podkit.manifest.references import Reference, references
from podkit.runtime import statedir
from podkit.runtime.forkserver import ForkServer
from podkit.runtime.node import RELOAD_SIGNAL

Obj = dict[str, Any]
_CONFIG_KINDS = {CONFIGMAP.kind: CONFIGMAP, SECRET.kind: SECRET}
TICK = 0.2  # seconds between looks at the supervisors' status files
TOKEN_RENEW = 0.8  # of a projected token's life, when the kubelet renews it


@dataclass
class Supervised:
    namespace: str
    name: str
    uid: str
    pod_dir: Path
    pid: int
    forks: ForkServer | None = None  # the fork server that started it (None: adopted)
    # The status and events files as last read: by content, not mtime (two writes within
    # one tick of the file system's clock would look like one).
    status_seen: bytes = b""
    events_seen: bytes = b""
    events_done: int = 0  # events.json's items already in the API
    signalled: set[int] = field(default_factory=set)
    refs: frozenset[tuple[str, str]] = frozenset()  # the (kind, name)s its manifest holds
    seen: tuple[Any, ...] = ()  # what of the pod the supervisor has: generation, labels...


class NodeAgent:
    def __init__(self, rest: Rest, state_dir: Path) -> None:
        self.rest = rest
        self.state_dir = state_dir
        self.work = state_dir / "serve" / "pods"  # each supervisor's manifest and its stderr
        self.pods: dict[str, Supervised] = {}  # by uid
        self.waiting: dict[str, set[str]] = {}  # pods held for a missing object: what was said
        self.cluster_dns: tuple[str, str] | None = None  # (address, domain) for ClusterFirst
        self.tokens: dict[str, tuple[str, float]] = {}  # pod uid -> its token, when issued
        self._forks: ForkServer | None = None  # started with the first pod

    async def run(self, stop: asyncio.Event) -> None:
        queue = self.rest.store.subscribe(self.rest.prefix(POD, None))
        configs = [
            self.rest.store.subscribe(self.rest.prefix(k, None))
            for k in (CONFIGMAP, SECRET, SERVICE)
        ]
        self._register()
        try:
            items, _ = self.rest.list_objects(POD, None)
            for pod in items:
                self._sync("ADDED", pod)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    event = await asyncio.wait_for(queue.get(), TICK)
                    self._sync(event.type, event.object)
                    while not queue.empty():
                        event = queue.get_nowait()
                        self._sync(event.type, event.object)
                for config in configs:
                    while not config.empty():
                        self._config_changed(config.get_nowait().object)
                self._mirror()
        finally:
            for q in [queue, *configs]:
                self.rest.store.unsubscribe(q)

    async def stop_all(self) -> None:
        """Stops every pod gracefully (SIGTERM to each supervisor, which gives the containers
        their grace periods) and waits for the supervisors, mirroring their last status."""
        for pod in self.pods.values():
            self._signal(pod, signal.SIGTERM)
        while self.pods:
            self._mirror()
            await asyncio.sleep(TICK)

    def _register(self) -> None:
        """This machine as the cluster's one Node (made, or brought up to date)."""
        node = node_object(os.uname().nodename)
        try:
            self.rest.create(NODE, "", node, "Ignore")
        except ApiError:  # there from an earlier start: its status is brought up to date
            self.rest.update_status(NODE, "", node["metadata"]["name"], node["status"])

    # --- reacting to the API ------------------------------------------------------------

    def _sync(self, type_: str, pod: Obj) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        running = self.pods.get(uid)
        if type_ == "DELETED":  # gone: forced, or its finalizers released
            if running is not None:
                self._signal(running, signal.SIGKILL)  # its files go once it has exited
            else:
                self._forget(uid, self._pod_dir(pod))
            return
        if "deletionTimestamp" in meta:
            if running is None:
                self.waiting.pop(uid, None)
                self._finish(pod)
            else:
                grace = int(meta.get("deletionGracePeriodSeconds", 30))
                self._signal(running, signal.SIGTERM if grace > 0 else signal.SIGKILL)
            return
        phase = (pod.get("status") or {}).get("phase")
        if running is not None:
            self._hand_over(running, pod)
        elif phase not in ("Succeeded", "Failed"):
            started = self._adopt(pod) or self._start(pod)
            if started is not None:
                self.pods[uid] = started

    def _config_changed(self, obj: Obj) -> None:
        """A ConfigMap, Secret or Service was written: the pods that read it get it (their
        volumes follow, as the kubelet's sync updates them; a Service's variables, the next
        containers started), and pods held for it may start."""
        meta = obj["metadata"]
        ref = (obj.get("kind", ""), meta["name"])
        if ref[0] == "Service":  # its variables, for the containers started from now on
            ns = meta.get("namespace")
            for pod in list(self.pods.values()):
                if pod.namespace == ns or (ns, ref[1]) == ("default", "kubernetes"):
                    with contextlib.suppress(ApiError):
                        current = self.rest.get(POD, pod.namespace, pod.name)
                        self._hand_over(pod, current, force=True)
            return
        for pod in list(self.pods.values()):
            if pod.namespace == meta.get("namespace") and ref in pod.refs:
                with contextlib.suppress(ApiError):
                    self._hand_over(pod, self.rest.get(POD, pod.namespace, pod.name), force=True)
        if self.waiting:
            for held in self.rest.list_objects(POD, meta.get("namespace"))[0]:
                if held["metadata"]["uid"] in self.waiting:
                    self._sync("MODIFIED", held)

    def _pod_dir(self, pod: Obj) -> Path:
        meta = pod["metadata"]
        return statedir.pod_dir(self.state_dir, meta["namespace"], meta["name"], meta["uid"])

    def _adopt(self, pod: Obj) -> Supervised | None:
        """The supervisor an earlier serve started, if it still runs."""
        pod_dir = self._pod_dir(pod)
        try:
            record = (pod_dir / "owner").read_text()
        except OSError:
            return None
        if not statedir.owner_alive(record):
            return None
        meta = pod["metadata"]
        pid = int(record.split()[0])
        adopted = Supervised(meta["namespace"], meta["name"], meta["uid"], pod_dir, pid)
        self._hand_over(adopted, pod)  # what changed while no serve was watching
        return adopted

    def _hand_over(self, sup: Supervised, pod: Obj, force: bool = False) -> None:
        """Gives a running supervisor the pod's newer version and the objects it reads:
        the manifest is rewritten and RELOAD_SIGNAL tells it (runtime/node.py)."""
        meta = pod["metadata"]
        seen = (meta.get("generation"), meta.get("labels"), meta.get("annotations"))
        if seen == sup.seen and not force:
            return  # a status write, most often
        sup.seen = seen
        if self._write_manifest(pod, sup):
            self._signal(sup, RELOAD_SIGNAL, again=True)

    def _write_manifest(self, pod: Obj, sup: Supervised | None = None) -> bool:
        """The supervisor's manifest: the pod and the ConfigMaps and Secrets it reads. False
        when the file already says that."""
        meta = pod["metadata"]
        docs = self._with_token(_without_server_fields(pod))
        refs = {(r.kind, r.name) for r in references(pod.get("spec") or {})}
        for kind, name in sorted(refs):
            with contextlib.suppress(ApiError):  # missing: the supervisor says what it lacks
                obj = self.rest.get(_CONFIG_KINDS[kind], meta["namespace"], name)
                docs.append(_without_server_fields(obj))
        services, _ = self.rest.list_objects(SERVICE, meta["namespace"])
        if meta["namespace"] != "default":  # the `kubernetes` Service's variables, for all
            with contextlib.suppress(ApiError):
                services.append(self.rest.get(SERVICE, "default", "kubernetes"))
        docs += [_without_server_fields(s) for s in services]
        if sup is not None:
            sup.refs = frozenset(refs)
        text = yaml.safe_dump_all(docs, sort_keys=False)
        manifest = self.work / f"{meta['uid']}.yaml"
        with contextlib.suppress(OSError):
            if manifest.read_text() == text:
                return False
        self.work.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = manifest.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # secrets inside
        with os.fdopen(fd, "w") as f:
            f.write(text)
        tmp.replace(manifest)  # the supervisor reads the old file or the new, never half
        return True

    def _with_token(self, pod: Obj) -> list[Obj]:
        """The pod for its supervisor, and the Secret holding its service account token: each
        serviceAccountToken projection becomes a projection of that Secret (kept in memory by
        the supervisor, as secrets are). The token is bound to the pod and renewed at 80% of
        its life (TOKEN_RENEW), as the kubelet renews it."""
        pod = copy.deepcopy(pod)  # its lists are the store's object's
        volumes = (pod.get("spec") or {}).get("volumes") or []
        wanted = [
            (v, i, s) for v in volumes
            for i, s in enumerate((v.get("projected") or {}).get("sources") or [])
            if "serviceAccountToken" in s
        ]  # fmt: skip
        if not wanted or self.rest.signer is None:
            return [pod]
        meta = pod["metadata"]
        held = self.tokens.get(meta["uid"])
        if held is None or time.time() - held[1] > TOKEN_RENEW * tokens.LIFETIME:
            account_name = pod["spec"].get("serviceAccountName", "default")
            try:
                account_uid = self.rest.get(SERVICE_ACCOUNT, meta["namespace"], account_name)[
                    "metadata"]["uid"]  # fmt: skip
            except ApiError:
                account_uid = ""
            who = tokens.Identity(meta["namespace"], account_name, meta["name"], meta["uid"])
            held = (self.rest.signer.issue(who, account_uid), time.time())
            self.tokens[meta["uid"]] = held
        name = f"{meta['name']}-podkit-token"
        for volume, i, source in wanted:
            path = source["serviceAccountToken"].get("path", "token")
            volume["projected"]["sources"][i] = {
                "secret": {"name": name, "items": [{"key": "token", "path": path}]}
            }
        secret = {"apiVersion": "v1", "kind": "Secret",
                  "metadata": {"name": name, "namespace": meta["namespace"]},
                  "data": {"token": base64.b64encode(held[0].encode()).decode()}}  # fmt: skip
        return [pod, secret]

    def _start(self, pod: Obj) -> Supervised | None:
        meta = pod["metadata"]
        if self._held(pod):
            return None
        self._write_manifest(pod)
        manifest = self.work / f"{meta['uid']}.yaml"
        argv = ["run", str(manifest), "--state-dir", str(self.state_dir), "--no-publish",
                "--no-logs", "--no-color", "-o", "json"]  # fmt: skip
        if self.cluster_dns:
            argv += ["--cluster-dns", self.cluster_dns[0], "--cluster-domain", self.cluster_dns[1]]
        statedir.keep(self._pod_dir(pod))  # until its object goes (_finish)
        with open(self.work / f"{meta['uid']}.log", "ab") as log:
            try:
                pid = self._fork_server().spawn(argv, log.fileno())
            except OSError:  # it died: a new one
                self._forks = None
                pid = self._fork_server().spawn(argv, log.fileno())
        sup = Supervised(
            meta["namespace"], meta["name"], meta["uid"], self._pod_dir(pod), pid, forks=self._forks
        )
        self._hand_over(sup, pod)  # only notes what it was given: the file says it already
        return sup

    def _fork_server(self) -> ForkServer:
        if self._forks is None:
            self._forks = ForkServer(self.work / "forkserver.log", self.state_dir)
        return self._forks

    def close(self) -> None:
        """Stops the fork server; the supervisors it started go on."""
        if self._forks is not None:
            self._forks.close()
            self._forks = None

    def _held(self, pod: Obj) -> bool:
        """The kubelet does not start a pod whose ConfigMaps or Secrets are missing: it waits
        (ContainerCreating, FailedMount events) and starts it once they exist."""
        meta = pod["metadata"]
        ns = meta["namespace"]
        missing = [
            r for r in references(pod.get("spec") or {})
            if not r.optional
            and self.rest.store.get(self.rest.key(_CONFIG_KINDS[r.kind], ns, r.name)) is None
        ]  # fmt: skip
        if not missing:
            self.waiting.pop(meta["uid"], None)
            return False
        said = self.waiting.setdefault(meta["uid"], set())
        status, events = waiting_status(pod, missing)
        with contextlib.suppress(ApiError):
            self.rest.update_status(POD, meta["namespace"], meta["name"], status)
        for event in events:
            if event[1] not in said:  # each once (the kubelet would count repeats)
                said.add(event[1])
                self._event(pod, len(said), *event)
        return True

    def _event(self, pod: Obj, n: int, type_: str, message: str, reason: str) -> None:
        meta = pod["metadata"]
        event = {
            "apiVersion": "v1", "kind": "Event", "type": type_, "reason": reason,
            "message": message, "firstTimestamp": now(), "lastTimestamp": now(), "count": 1,
            "source": {"component": "kubelet", "host": os.uname().nodename},
            "involvedObject": {"kind": "Pod", "namespace": meta["namespace"],
                               "name": meta["name"], "uid": meta["uid"]},
            "metadata": {"name": f"{meta['name']}.{meta['uid'][:8]}-wait{n}",
                         "namespace": meta["namespace"]},
        }  # fmt: skip
        with contextlib.suppress(ApiError):
            self.rest.create(EVENT, meta["namespace"], event, "Ignore")

    def _signal(self, pod: Supervised, sig: int, again: bool = False) -> None:
        if sig in pod.signalled and not again:
            return
        pod.signalled.add(sig)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pod.pid, sig)

    # --- mirroring the node into the API ------------------------------------------------

    def _mirror(self) -> None:
        for uid, pod in list(self.pods.items()):
            self._copy_status(pod)
            self._copy_events(pod)
            if not self._alive(pod):
                self._copy_status(pod)  # what it wrote last
                self._copy_events(pod)
                del self.pods[uid]
                self.tokens.pop(uid, None)
                self._exited(pod)
            elif time.time() - self.tokens.get(uid, ("", time.time()))[1] > (
                TOKEN_RENEW * tokens.LIFETIME
            ):  # its token is due for renewal
                with contextlib.suppress(ApiError):
                    current = self.rest.get(POD, pod.namespace, pod.name)
                    self._hand_over(pod, current, force=True)

    def _copy_events(self, pod: Supervised) -> None:
        """The supervisor's events (events.json, append-only) as Event objects, named
        `<pod>.<uid prefix><index>` so a re-adopting serve writes each one once."""
        path = pod.pod_dir / "events.json"
        try:
            raw = path.read_bytes()
            if raw == pod.events_seen:
                return
            items = json.loads(raw).get("items") or []
        except (OSError, ValueError):
            return
        pod.events_seen = raw
        for i, event in enumerate(items[pod.events_done :], start=pod.events_done):
            name = f"{pod.name}.{pod.uid[:8]}{i:08x}"
            meta = {"name": name, "namespace": pod.namespace}
            with contextlib.suppress(ApiError):  # AlreadyExists: an earlier serve wrote it
                self.rest.create(EVENT, pod.namespace, {**event, "metadata": meta}, "Ignore")
        pod.events_done = len(items)

    def _copy_status(self, pod: Supervised) -> None:
        path = pod.pod_dir / "status.json"
        try:
            raw = path.read_bytes()
            if raw == pod.status_seen:
                return
            doc = json.loads(raw)
        except (OSError, ValueError):
            return
        pod.status_seen = raw
        with contextlib.suppress(ApiError):
            self.rest.update_status(POD, pod.namespace, pod.name, doc.get("status") or {})

    def _alive(self, pod: Supervised) -> bool:
        if pod.forks is not None and pod.forks.running:
            return pod.forks.exit_code(pod.pid) is None  # told once reaped: no zombie
        try:
            os.kill(pod.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _exited(self, pod: Supervised) -> None:
        try:
            current = self.rest.get(POD, pod.namespace, pod.name)
        except ApiError:  # force-deleted meanwhile
            self._forget(pod.uid, pod.pod_dir)
            return
        if current["metadata"]["uid"] != pod.uid:  # deleted, and made again meanwhile
            self._forget(pod.uid, pod.pod_dir)
            return
        if "deletionTimestamp" in current["metadata"]:
            # Stopped for its deletion: its phase is terminal now (as the kubelet sets it),
            # and it goes, unless finalizers hold it until they are removed.
            status = current.get("status") or {}
            if status.get("phase") not in ("Succeeded", "Failed"):
                codes = [
                    (s.get("state") or {}).get("terminated", {}).get("exitCode")
                    for s in status.get("containerStatuses") or []
                ]
                phase = "Succeeded" if codes and all(c == 0 for c in codes) else "Failed"
                with contextlib.suppress(ApiError):
                    self.rest.update_status(
                        POD, pod.namespace, pod.name, {**status, "phase": phase}
                    )
            self._finish(current)
            return
        code = pod.forks.exit_code(pod.pid) if pod.forks is not None else None
        status = current.get("status") or {}
        if status.get("phase") in ("Pending", None) and code not in (None, 0):
            # The supervisor refused the pod before running it: say why, as a Failed pod.
            why = self._supervisor_error(pod.uid)
            self.rest.update_status(
                POD, pod.namespace, pod.name,
                {**status, "phase": "Failed", "reason": "PodkitRunFailed", "message": why},
            )  # fmt: skip

    def _supervisor_error(self, uid: str) -> str:
        try:
            lines = (self.work / f"{uid}.log").read_text(errors="replace").splitlines()
        except OSError:
            return "the pod's supervisor exited"
        errors = [line for line in lines if "error" in line.lower()]
        return " ".join(errors[-3:] or lines[-3:]) or "the pod's supervisor exited"

    def _finish(self, pod: Obj) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            self.rest.finish_delete(POD, meta["namespace"], meta["name"])
            self.rest.get(POD, meta["namespace"], meta["name"])
            return  # a finalizer holds it: its files stay until it goes (DELETED)
        self._forget(meta["uid"], self._pod_dir(pod))

    def _forget(self, uid: str, pod_dir: Path) -> None:
        """The pod's object is gone: its files go too (the kubelet removes a deleted pod's
        directory and logs)."""
        for suffix in (".yaml", ".log"):
            (self.work / f"{uid}{suffix}").unlink(missing_ok=True)
        statedir.forget(pod_dir)


def waiting_status(pod: Obj, missing: list[Reference]) -> tuple[Obj, list[tuple[str, str, str]]]:
    """What the kubelet shows of a pod held for missing objects: its status (Pending, each
    container waiting) and its events (type, message, reason). A missing volume source holds
    the whole pod before any container (ContainerCreating, FailedMount); only when the volumes
    are there does a missing env source show (CreateContainerConfigError)."""
    volumes = [r for r in missing if r.volume]
    events = []
    for ref in volumes or missing:
        what = f'{ref.kind.lower()} "{ref.name}" not found'
        if ref.volume:
            message = f'MountVolume.SetUp failed for volume "{ref.volume}" : {what}'
            events.append(("Warning", message, "FailedMount"))
        else:
            events.append(("Warning", f"Error: {what}", "Failed"))
    if volumes:
        waiting: Obj = {"reason": "ContainerCreating"}
    else:
        first = missing[0]
        message = f'{first.kind.lower()} "{first.name}" not found'
        waiting = {"reason": "CreateContainerConfigError", "message": message}
    containers = [
        {"name": c["name"], "image": c.get("image", ""), "ready": False, "restartCount": 0,
         "started": False, "state": {"waiting": waiting}}
        for c in (pod.get("spec") or {}).get("containers") or []
    ]  # fmt: skip
    status = {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": containers,
    }
    return status, events


def _without_server_fields(obj: Obj) -> Obj:
    """The object as a manifest for `podkit run`: no status, no server-side metadata but the
    uid (the supervisor keeps it, so the pod directory and the API agree)."""
    meta = {
        k: v
        for k, v in obj.get("metadata", {}).items()
        if k not in ("resourceVersion", "creationTimestamp", "managedFields", "generation",
                     "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink")
    }  # fmt: skip
    if "annotations" in meta:  # a copy: `obj` may be the store's
        meta["annotations"] = {
            k: v for k, v in meta["annotations"].items()
            if k != "kubectl.kubernetes.io/last-applied-configuration"
        }  # fmt: skip
    return {k: v for k, v in {**obj, "metadata": meta}.items() if k != "status"}


def node_object(name: str) -> Obj:
    """The Node as the kubelet reports it: capacity, addresses, conditions, nodeInfo."""
    import datetime
    import platform
    import socket

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    memory_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as f:
        memory_kib = int(f.readline().split()[1])
    os_image = "Linux"
    with contextlib.suppress(OSError), open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                os_image = line.split("=", 1)[1].strip().strip('"')
    address = "127.0.0.1"
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET: picks the route's source address, sends nothing
        address = s.getsockname()[0]
    capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{memory_kib}Ki", "pods": "110"}
    ready = {
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "podkit serve is running pods", "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }  # fmt: skip
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
                "node-role.kubernetes.io/control-plane": "",
            },
        },
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [ready],
            "addresses": [
                {"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.37.0",
                "containerRuntimeVersion": f"podkit://{__version__}",
                "kernelVersion": platform.release(),
                "osImage": os_image,
                "operatingSystem": "linux",
                "architecture": arch,
                # What the kubelet reads for these; "" where this machine has no such file.
                "machineID": _first_line("/etc/machine-id"),
                "systemUUID": _first_line("/sys/class/dmi/id/product_uuid"),
                "bootID": _first_line("/proc/sys/kernel/random/boot_id"),
                "kubeProxyVersion": "",  # deprecated; kubelets leave it empty
            },
        },
    }


def _first_line(path: str) -> str:
    try:
        with open(path) as f:
            return f.readline().strip()
    except OSError:
        return ""
