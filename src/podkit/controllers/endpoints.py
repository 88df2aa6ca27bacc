"""The EndpointSlice controller: for each Service with a selector, the addresses of the pods
it selects, with their readiness (`ready` follows the readiness probes; a terminating pod is
`terminating`, still `serving` while Ready), its ports resolved against each pod's containers
(a named targetPort finds the containerPort of that name), owned by the Service; a pod with
`hostname` and `subdomain` naming the Service gives its endpoint that hostname (for DNS).

Pure `endpoints` decides; the controller writes one slice per Service and port set.
"""

from __future__ import annotations

import contextlib
from typing import Any

from podkit.api.kinds import ENDPOINT_SLICE, POD, SERVICE, Kind, Obj
from podkit.api.rest import random_suffix
from podkit.api.status import ApiError
from podkit.controllers.loop import Controller, Key
from podkit.controllers.replicas import owner_ref, ready_since

SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
MANAGER = "endpointslice-controller.k8s.io"


def _target(port: Obj, pod: Obj) -> int | None:
    """A Service port's targetPort on one pod: a number, or a named containerPort."""
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target and p.get("protocol", "TCP") == port.get("protocol", "TCP"):
                return int(p["containerPort"])
    return None


def endpoints(svc: Obj, pods: list[Obj]) -> list[tuple[list[Obj], list[Obj]]]:
    """(ports, endpoints) groups for the Service: pods whose named ports resolve alike share
    a group, as they share a slice."""
    selector = (svc.get("spec") or {}).get("selector") or {}
    groups: dict[tuple[Any, ...], list[Obj]] = {}
    ports_of: dict[tuple[Any, ...], list[Obj]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        meta, status = pod["metadata"], pod.get("status") or {}
        labels = meta.get("labels") or {}
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            continue
        ip = status.get("podIP")
        if not ip or status.get("phase") in ("Succeeded", "Failed"):
            continue
        ports = []
        for port in (svc.get("spec") or {}).get("ports") or []:
            number = _target(port, pod)
            if number is not None:
                ports.append({"name": port.get("name", ""), "port": number,
                              "protocol": port.get("protocol", "TCP")})  # fmt: skip
        key = tuple((p["name"], p["port"], p["protocol"]) for p in ports)
        ready = ready_since(pod) is not None
        terminating = "deletionTimestamp" in meta
        spec = pod.get("spec") or {}
        named = spec.get("subdomain") == svc["metadata"]["name"] and spec.get("hostname")
        groups.setdefault(key, []).append({
            **({"hostname": spec["hostname"]} if named else {}),
            "addresses": [ip],
            "conditions": {"ready": ready and not terminating, "serving": ready,
                           "terminating": terminating},
            "nodeName": spec.get("nodeName", ""),
            "targetRef": {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"],
                          "uid": meta["uid"]},
        })  # fmt: skip
        ports_of[key] = ports
    return [(ports_of[k], groups[k]) for k in sorted(groups)]


def slice_body(svc: Obj, ports: list[Obj], found: list[Obj], name: str) -> Obj:
    meta = svc["metadata"]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {SERVICE_NAME: meta["name"], MANAGED_BY: MANAGER},
            "ownerReferences": [owner_ref(svc)],
        },
        "addressType": "IPv4",
        "endpoints": found,
        "ports": ports,
    }


class EndpointSliceController(Controller):
    name = "endpointslice-controller"
    watches = (SERVICE, POD, ENDPOINT_SLICE)

    def keys(self, kind: Kind, obj: Obj) -> list[Key]:
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        if kind is SERVICE:
            return [(ns, meta["name"])]
        if kind is ENDPOINT_SLICE:
            owner = (meta.get("labels") or {}).get(SERVICE_NAME)
            return [(ns, owner)] if owner else []
        return [(ns, s["metadata"]["name"]) for s in self.rest.list_objects(SERVICE, ns)[0]
                if (s.get("spec") or {}).get("selector")]  # fmt: skip

    def sync(self, key: Key) -> float | None:
        ns, name = key
        mine = [s for s in self.rest.list_objects(ENDPOINT_SLICE, ns)[0]
                if (s["metadata"].get("labels") or {}).get(SERVICE_NAME) == name
                and (s["metadata"].get("labels") or {}).get(MANAGED_BY) == MANAGER]  # fmt: skip
        try:
            svc = self.rest.get(SERVICE, ns, name)
        except ApiError:
            svc = None
        if svc is None or not (svc.get("spec") or {}).get("selector"):
            for s in mine:  # the Service is gone, or its endpoints are someone else's
                with contextlib.suppress(ApiError):
                    self.rest.delete(ENDPOINT_SLICE, ns, s["metadata"]["name"])
            return None
        wanted = endpoints(svc, self.rest.list_objects(POD, ns)[0]) or [([], [])]
        for i, (ports, found) in enumerate(wanted):
            if i < len(mine):
                current = mine[i]
                body = slice_body(svc, ports, found, current["metadata"]["name"])
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                if (current.get("endpoints"), current.get("ports")) != (found, ports):
                    self.rest.replace(ENDPOINT_SLICE, ns, current["metadata"]["name"], body)
            else:
                body = slice_body(svc, ports, found, f"{name}-{random_suffix()}")
                self.rest.create(ENDPOINT_SLICE, ns, body)
        for extra in mine[len(wanted) :]:
            with contextlib.suppress(ApiError):
                self.rest.delete(ENDPOINT_SLICE, ns, extra["metadata"]["name"])
        return None
